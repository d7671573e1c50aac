"""The HTTP API over a loaded classifier (FastAPI; served by uvicorn in ``server.py``).

    POST /predict   {"texts": ["...", ...], "top_k": 3}  ->  {"predictions": [{"label", "symbol", "score", "top_k"}, ...]}
    GET  /health    {"status": "ok", "engine", "classes", "batches"}
    GET  /labels    [{"id", "label", "symbol"}, ...]
    GET  /openapi.json, /docs, /redoc   (Swagger UI and ReDoc served by this server: offline too)

FastAPI because its request models give both the validation and the OpenAPI description, and
uvicorn drains in-flight requests on SIGTERM. Every client error is a 4xx with one line of JSON,
``{"error": "..."}``: invalid JSON (400), a body over ``max_body_bytes`` (413), missing or empty
``texts``, non-string items, more than ``max_texts`` texts, a bad ``top_k`` (422; strict: no ``true``
or ``"2"``), an unknown path or method (404, 405). A batch the
model failed on answers its requests with a one-line 503.
"""

from __future__ import annotations

from contextlib import asynccontextmanager

from fastapi import FastAPI, Request
from fastapi_offline import FastAPIOffline
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field, StrictInt, StrictStr, ValidationError
from starlette.exceptions import HTTPException

from finetune_pipeline.evaluation.report import prediction_rows
from finetune_pipeline.serving.batcher import Batcher
from finetune_pipeline.serving.worker import EngineProcess


class PredictRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    texts: list[StrictStr] = Field(min_length=1, description="the texts to classify")
    top_k: StrictInt = Field(5, ge=1, description="classes listed per text (more than there are: all)")


class Ranked(BaseModel):
    label: str
    symbol: str
    score: float


class Prediction(Ranked):
    top_k: list[Ranked]


class PredictResponse(BaseModel):
    predictions: list[Prediction]


class ErrorBody(BaseModel):
    error: str = Field(description="what was wrong, in one line")


def _error_response(description: str, example: str) -> dict:
    return {"model": ErrorBody, "description": description,
            "content": {"application/json": {"example": {"error": example}}}}


ERRORS = {  # every error /predict answers with, as the OpenAPI schema documents it
    400: _error_response("The body is not JSON.", "invalid JSON: Expecting value"),
    413: _error_response("The body is over the server's --max-body-bytes.",
                         "request body of 2097152 bytes is over the limit of 1048576"),
    422: _error_response("The JSON does not fit the request: texts missing, empty or not strings, too many texts, "
                         "top_k not a positive integer.", "texts: List should have at least 1 item after validation"),
    503: _error_response("The model failed on the batch holding this request (e.g. its inference process died; it "
                         "is started again).", "the model failed on this request's batch: inference process exited"),
}


def create_app(engines: list[EngineProcess], max_batch_size: int = 64, max_wait_ms: float = 5.0, max_texts: int = 256,
               max_body_bytes: int = 1 << 20) -> FastAPI:
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
    app = FastAPIOffline(title="finetune-pipeline classifier", lifespan=lifespan,
                         description="News-topic classification with a run trained by finetune-pipeline.")

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
        declared = request.headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > max_body_bytes:
            return _error(413, f"request body of {declared} bytes is over the limit of {max_body_bytes}")
        if request.method == "POST":
            body = b""
            async for chunk in request.stream():
                body += chunk
                if len(body) > max_body_bytes:
                    return _error(413, f"request body is over the limit of {max_body_bytes} bytes")
            request._body = body  # read once here; the endpoint's parser reads it from there
        return await call_next(request)

    @app.post("/predict", response_model=PredictResponse, responses=ERRORS, openapi_extra={"requestBody": {
        "required": True, "content": {"application/json": {"schema": PredictRequest.model_json_schema()}}}})
    async def predict(request: Request) -> dict:
        # the body is JSON whatever the Content-Type says (curl -d sends form encoding)
        try:
            body = PredictRequest.model_validate_json(await request.body())
        except ValidationError as e:
            raise RequestValidationError(e.errors()) from None
        if len(body.texts) > max_texts:
            return _error(422, f"texts: {len(body.texts)} texts, at most {max_texts} per request")
        try:
            probs = await batcher.submit(body.texts)
        except Exception as e:  # noqa: BLE001 -- logged by the batcher; the server goes on
            return _error(503, f"the model failed on this request's batch: {e}")
        model = engines[0].model
        rows = prediction_rows(body.texts, probs, model.symbols, model.labels, top_k=body.top_k)
        return {"predictions": [{k: v for k, v in row.items() if k != "text"} for row in rows]}

    @app.get("/health")
    async def health() -> dict:
        model = engines[0].model
        return {"status": "ok", "engine": model.engine, "classes": len(model.labels), "batches": batcher.batches,
                "inference_pids": [engine.model.pid for engine in engines]}

    @app.get("/labels")
    async def labels() -> list[dict]:
        model = engines[0].model
        return [{"id": i, "label": label, "symbol": symbol} for i, (label, symbol) in enumerate(zip(model.labels, model.symbols))]

    return app


def _error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": " ".join(message.split())}, status_code=status)

