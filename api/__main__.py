"""`python -m api`: serve the API with uvicorn on BUD_API_HOST:BUD_API_PORT."""

import logging

import uvicorn

from api.app import create_app
from core.settings import get_settings


class DropQueryStrings(logging.Filter):
    """uvicorn's access log line carries the path with its query string, where a token may travel (a dashboard
    sign-in link, a client that puts credentials in the URL): log the path only."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.args, tuple) and len(record.args) >= 3 and isinstance(record.args[2], str):
            record.args = (*record.args[:2], record.args[2].split("?", 1)[0], *record.args[3:])
        return True


def main() -> None:
    settings = get_settings()
    logging.getLogger("uvicorn.access").addFilter(DropQueryStrings())
    uvicorn.run(create_app(settings), host=settings.api_host, port=settings.api_port, log_level="info")


if __name__ == "__main__":
    main()
