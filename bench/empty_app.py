"""The reference for single-event ingest: an endpoint that reads and parses the same body, and
stores nothing. Served by uvicorn with the same workers as tokenpulse."""

import json

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

app = FastAPI()


@app.post("/v1/events")
async def parse_only(request: Request) -> JSONResponse:
    json.loads(await request.body())
    return JSONResponse({"accepted": 1, "duplicates": 0, "rejected": 0, "errors": []})
