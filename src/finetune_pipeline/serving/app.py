"""The HTTP API over a loaded classifier (FastAPI; served by uvicorn in ``server.py``).

    POST /predict   {"texts": ["...", ...], "top_k": 3}
                    ->  {"predictions": [{"label", "symbol", "score", "top_k"}, ...]}
    GET  /health    {"status": "ok", "engine", "classes", "batches"}
    GET  /labels    [{"id", "label", "symbol"}, ...]
    GET  /openapi.json, /docs, /redoc   (Swagger UI and ReDoc served by this server: offline too)

FastAPI because its request models give both the validation and the OpenAPI description, and
uvicorn drains in-flight requests on SIGTERM. Every client error is a 4xx with one line of JSON,
``{"error": "..."}``: invalid JSON or a key given twice (400), a body not sent in full within
``body_timeout`` seconds (408), a body over ``max_body_bytes`` or texts holding more than
``max_request_chars`` characters together (413), missing or empty ``texts``, an empty or blank text,
a text over ``max_text_chars`` characters, non-string items, more than ``max_texts`` texts, a bad
``top_k`` (422; strict: no ``true`` or ``"2"``), an unknown path or method (404, 405). The limits
bound the work one request can cost (a chunked run encodes every window of a long text). A batch
the model failed on answers its requests with a one-line 503. A client that goes away mid-body is
logged in one line.
"""

from __future__ import annotations

import asyncio
import json
import logging
from contextlib import asynccontextmanager
from dataclasses import dataclass

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi_offline import FastAPIOffline
from pydantic import BaseModel, ConfigDict, Field, StrictInt, StrictStr, ValidationError
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect

from finetune_pipeline.evaluation.multilabel import multilabel_rows
from finetune_pipeline.evaluation.report import prediction_rows
from finetune_pipeline.serving.batcher import Batcher
from finetune_pipeline.serving.worker import EngineProcess

log = logging.getLogger(__name__)


class PredictRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    texts: list[StrictStr] = Field(min_length=1, description="the texts to classify")
    top_k: StrictInt = Field(5, ge=1, description="classes listed per text (more than there are: all)")
    min_score: float | None = Field(
        None,
        ge=0.0,
        le=1.0,
        allow_inf_nan=False,
        description="abstain below this score: label and symbol are null (the score and top_k are still given); "
        "a multi-label model lists only the labels reaching it",
    )


class Ranked(BaseModel):
    label: str
    symbol: str
    score: float


class Prediction(BaseModel):
    label: str | None  # null: abstained (its score is below the request's min_score)
    symbol: str | None
    score: float
    top_k: list[Ranked]


class LabelSet(BaseModel):
    """A multi-label model's answer: the labels whose score reaches 0.5 (each label's tuned threshold)."""

    labels: list[str]  # possibly none
    symbols: list[str]
    scores: dict[str, float]  # every label's


class PredictResponse(BaseModel):
    predictions: list[Prediction] | list[LabelSet]


class ErrorBody(BaseModel):
    error: str = Field(description="what was wrong, in one line")


def _error_response(description: str, example: str) -> dict:
    return {
        "model": ErrorBody,
        "description": description,
        "content": {"application/json": {"example": {"error": example}}},
    }


ERRORS = {  # every error /predict answers with, as the OpenAPI schema documents it
    400: _error_response("The body is not JSON, or gives a key twice.", "invalid JSON: Expecting value"),
    408: _error_response(
        "The body was not sent in full within the server's --body-timeout.",
        "the request body was not sent within 30 s (--body-timeout)",
    ),
    413: _error_response(
        "The body is over the server's --max-body-bytes, or its texts over --max-request-chars.",
        "request body of 2097152 bytes is over the limit of 1048576",
    ),
    422: _error_response(
        "The JSON does not fit the request: texts missing, empty or not strings, a blank text, a "
        "text over --max-text-chars, too many texts, top_k not a positive integer.",
        "texts[0]: an empty or blank text (there is nothing to classify)",
    ),
    503: _error_response(
        "The model failed on the batch holding this request (e.g. its inference process died; it is started again).",
        "the model failed on this request's batch: inference process exited",
    ),
}


@dataclass(frozen=True)
class Limits:
    """What one request may cost (``serve --max-*``, ``--body-timeout``)."""

    max_texts: int = 256
    max_body_bytes: int = 1 << 20
    max_text_chars: int = 20_000  # a long news article is 5-10k characters
    max_request_chars: int = 200_000
    body_timeout: float = 30.0  # seconds between two parts of a body


def check_texts(texts: list[str], limits: Limits) -> tuple[int, str] | None:
    """(status, message) for texts one request may not send; None when they are fine."""
    if len(texts) > limits.max_texts:
        return 422, f"texts: {len(texts)} texts, at most {limits.max_texts} per request"
    for i, text in enumerate(texts):
        if not text.strip():
            return 422, f"texts[{i}]: an empty or blank text (there is nothing to classify)"
        if len(text) > limits.max_text_chars:
            return 422, (
                f"texts[{i}]: {len(text)} characters, over the server's limit of {limits.max_text_chars} "
                "per text (--max-text-chars)"
            )
    total = sum(len(t) for t in texts)
    if total > limits.max_request_chars:
        return 413, (
            f"texts: {total} characters together, over the server's limit of {limits.max_request_chars} "
            "per request (--max-request-chars); send fewer texts per request"
        )
    return None


def parse_body(body: bytes) -> PredictRequest:
    """The request, from JSON with no key given twice (which value was meant would be a guess)."""

    def no_duplicates(pairs: list[tuple[str, object]]) -> dict:
        keys = [k for k, _ in pairs]
        twice = sorted({k for k in keys if keys.count(k) > 1})
        if twice:
            raise BodyError(f"invalid JSON: key {twice[0]!r} given more than once")
        return dict(pairs)

    try:
        json.loads(body, object_pairs_hook=no_duplicates)
    except BodyError:
        raise
    except RecursionError:
        raise BodyError("invalid JSON: recursion limit exceeded (nested too deeply)") from None
    except ValueError as e:  # JSONDecodeError, or bytes that are not UTF-8
        raise BodyError(f"invalid JSON: {e}") from None
    return PredictRequest.model_validate_json(body)  # JSON-mode validation: its messages name JSON types


class BodyError(ValueError):
    """A body that is not one JSON object with distinct keys: 400."""


def create_app(
    engines: list[EngineProcess], max_batch_size: int = 64, max_wait_ms: float = 5.0, limits: Limits = Limits()
) -> FastAPI:
    batcher = Batcher([engine.probabilities for engine in engines], max_batch_size, max_wait_ms)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        batcher.start()
        yield
        await batcher.stop()  # uvicorn has let the in-flight requests finish
        for engine in engines:
            engine.close()

    # FastAPIOffline: /docs and /redoc load Swagger UI and ReDoc from this server (fastapi-offline ships
    # them), not from a CDN the machine may not reach
    app = FastAPIOffline(
        title="finetune-pipeline classifier",
        lifespan=lifespan,
        description="News-topic classification with a run trained by finetune-pipeline.",
    )

    @app.exception_handler(RequestValidationError)
    async def invalid_request(request: Request, exc: RequestValidationError) -> JSONResponse:
        first = exc.errors()[0]
        if first.get("type") == "json_invalid":
            return _error(400, f"invalid JSON: {first.get('ctx', {}).get('error', first.get('msg'))}")
        where = ".".join(str(part) for part in first.get("loc", ()) if part != "body") or "the body"
        return _error(422, f"{where}: {first.get('msg')}")

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, exc: HTTPException) -> JSONResponse:  # 404, 405: the same one-line shape
        return _error(exc.status_code, f"{request.method} {request.url.path}: {exc.detail}")

    @app.middleware("http")
    async def limit_body(request: Request, call_next):
        limit = limits.max_body_bytes
        declared = request.headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > limit:
            return _error(413, f"request body of {declared} bytes is over the limit of {limit}")
        if request.method == "POST":
            body, chunks = b"", request.stream().__aiter__()
            try:
                while True:
                    try:  # a client that stalls mid-body does not hold the server (nor its shutdown)
                        chunk = await asyncio.wait_for(chunks.__anext__(), limits.body_timeout)
                    except StopAsyncIteration:
                        break
                    body += chunk
                    if len(body) > limit:
                        return _error(413, f"request body is over the limit of {limit} bytes")
            except asyncio.TimeoutError:
                return _error(408, f"the request body was not sent within {limits.body_timeout:g} s (--body-timeout)")
            except ClientDisconnect:
                log.info("%s %s: the client went away before sending its whole body", request.method, request.url.path)
                return _error(400, "the client went away before sending its whole body")
            request._body = body  # read once here; the endpoint's parser reads it from there
        return await call_next(request)

    @app.post(
        "/predict",
        response_model=PredictResponse,
        responses=ERRORS,
        openapi_extra={
            "requestBody": {
                "required": True,
                "content": {"application/json": {"schema": PredictRequest.model_json_schema()}},
            }
        },
    )
    async def predict(request: Request) -> dict:
        # the body is JSON whatever the Content-Type says (curl -d sends form encoding)
        try:
            body = parse_body(await request.body())
        except BodyError as e:
            return _error(400, str(e))
        except ValidationError as e:
            raise RequestValidationError(e.errors()) from None
        refused = check_texts(body.texts, limits)
        if refused:
            return _error(*refused)
        try:
            probs = await batcher.submit(body.texts)
        except Exception as e:
            return _error(503, f"the model failed on this request's batch: {e}")
        model = engines[0].model
        if model.multi_label:
            rows = multilabel_rows(body.texts, probs, model.symbols, model.labels, min_score=body.min_score)
        else:
            rows = prediction_rows(
                body.texts, probs, model.symbols, model.labels, top_k=body.top_k, min_score=body.min_score
            )
        return {"predictions": [{k: v for k, v in row.items() if k != "text"} for row in rows]}

    @app.get("/health")
    async def health() -> dict:
        model = engines[0].model
        return {
            "status": "ok",
            "engine": model.engine,
            "classes": len(model.labels),
            "task": "multi_label" if model.multi_label else "single_label",
            "batches": batcher.batches,
            "inference_pids": [engine.model.pid for engine in engines],
        }

    @app.get("/labels")
    async def labels() -> list[dict]:
        model = engines[0].model
        return [
            {"id": i, "label": label, "symbol": symbol}
            for i, (label, symbol) in enumerate(zip(model.labels, model.symbols))
        ]

    return app


def _error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": " ".join(message.split())}, status_code=status)
