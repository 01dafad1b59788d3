"""The API's documentation pages, `/docs` (Swagger UI) and `/redoc` (ReDoc), from copies shipped
in the package: they work offline and send visitors to no other host."""
