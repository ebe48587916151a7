"""The API as `python -m api` serves it: what reaches its log."""

from __future__ import annotations

import httpx

from tests.helpers import api_process


async def test_a_token_in_a_query_string_never_reaches_the_access_log(settings, db_pool, state_dir, admin_token):
    secret = "tok_" + "s3cr3t" * 4
    async with api_process(settings, state_dir, "api-log-check") as (url, process):
        async with httpx.AsyncClient() as client:
            reply = await client.get(f"{url}/api/models", params={"token": secret},
                                     headers={"Authorization": f"Bearer {admin_token}"})
        assert reply.status_code == 200
    log = process.log_path.read_text()
    assert '"GET /api/models HTTP/1.1" 200' in log  # the request is logged ...
    assert secret not in log and admin_token not in log  # ... without what it carried
