import httpx

from tests.factories import event


async def test_an_event_is_accepted_and_counted(client: httpx.AsyncClient) -> None:
    response = await client.post("/v1/events", json=event())
    assert response.status_code == 200, response.text
    assert response.json() == {"accepted": 1, "duplicates": 0, "rejected": 0, "errors": []}
    totals = await client.get("/v1/totals", params={"window": "1h"})
    assert totals.json()["results"][0]["total_tokens"] == 2000
