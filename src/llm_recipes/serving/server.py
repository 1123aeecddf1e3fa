"""`llm-recipes serve <model>`: transformers' own `transformers serve` FastAPI app (OpenAI-compatible
`/v1/chat/completions` with streaming, `/v1/models`, `/health`), pinned to one model, behind the guard
(`llm_recipes.serving.guard`), on uvicorn.

The app is assembled as `transformers.cli.serve.Serve.__init__` assembles it (ModelManager, GenerationState, the
handlers, `build_server`): `Serve` itself also starts uvicorn on the unguarded app, so it cannot be wrapped.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import threading
from collections.abc import Iterator
from pathlib import Path

from llm_recipes.errors import ConfigError
from llm_recipes.serving.config import LOOPBACK_HOSTS, ServeArguments
from llm_recipes.serving.guard import Guard, GuardSettings, RequestLog, build_filters

logger = logging.getLogger("llm_recipes.serving")
API_KEY_ENV = "LLM_RECIPES_API_KEY"


def check_args(args: ServeArguments) -> None:
    """User errors found before the model loads (each a ConfigError: one line, exit 2)."""
    if not args.model_name_or_path:
        raise ConfigError("model_name_or_path: not set (a release folder such as runs/toy/release, or a Hub id)")
    if not args.api_key and os.environ.get(API_KEY_ENV):
        args.api_key = os.environ[API_KEY_ENV]
    if args.host not in LOOPBACK_HOSTS and not args.api_key:
        raise ConfigError(f"host: {args.host} is not loopback, so clients need a key: set api_key (or {API_KEY_ENV})")
    if args.upstream:
        if not args.upstream.startswith(("http://", "https://")):
            raise ConfigError(f"upstream: must be an http(s) URL such as http://127.0.0.1:8001, got {args.upstream!r}")
    else:
        from llm_recipes.models import check_local_weights

        # transformers' loader is not told use_safetensors=True: a local folder is checked here (pickled weights are refused)
        check_local_weights(args.model_name_or_path, "model_name_or_path", tokenizer=True)
    for key in ("max_request_bytes", "max_concurrent"):
        if getattr(args, key) < 1:
            raise ConfigError(f"{key}: must be >= 1, got {getattr(args, key)!r}")
    if not 0 <= args.port <= 65535:
        raise ConfigError(f"port: must be in [0, 65535], got {args.port!r}")


def model_version(model: str) -> str:
    """`<folder>@<first 12 of the config hash>` from a release folder's completion marker (llm_recipes.json),
    else the folder's name, else the Hub id."""
    from llm_recipes.hub import read_marker

    path = Path(model)
    if not path.is_dir():
        return model
    name = path.resolve().name
    try:
        marker = read_marker(path)
    except (OSError, json.JSONDecodeError):
        marker = None
    if marker and marker.get("config_hash"):
        return f"{name}@{str(marker['config_hash'])[:12]}"
    return name


def model_generation_config(model: str) -> dict:
    """The model's generation_config.json as a dict ({} without one: transformers then uses its defaults)."""
    from transformers import GenerationConfig

    try:
        return GenerationConfig.from_pretrained(model).to_diff_dict()
    except OSError:
        return {}


def build_transformers_app(model: str, device: str = "auto", dtype: str = "auto"):
    """transformers' serving app pinned to `model` (loaded now), as `transformers serve <model>` builds it."""
    from transformers.utils.import_utils import is_serve_available

    if not is_serve_available():
        raise ConfigError("serving needs FastAPI, uvicorn and openai: pip install 'llm-recipes[serve]'")
    from transformers.cli.serving.chat_completion import ChatCompletionHandler
    from transformers.cli.serving.completion import CompletionHandler
    from transformers.cli.serving.model_manager import ModelManager
    from transformers.cli.serving.response import ResponseHandler
    from transformers.cli.serving.server import build_server
    from transformers.cli.serving.systemone import SystemOneHandler
    from transformers.cli.serving.transcription import TranscriptionHandler
    from transformers.cli.serving.utils import GenerationState

    # transformers logs every request at WARNING ("[Request received] Model: ..."): the guard's log has them
    logging.getLogger("transformers.cli.serving.chat_completion").addFilter(
        lambda record: not str(record.msg).startswith("[Request received]"))
    manager = ModelManager(device=device, dtype=dtype, force_model=model)
    state = GenerationState(continuous_batching=False, compile=False, cb_config=None)
    app = build_server(
        manager,
        ChatCompletionHandler(model_manager=manager, generation_state=state),
        completion_handler=CompletionHandler(model_manager=manager, generation_state=state),
        response_handler=ResponseHandler(model_manager=manager, generation_state=state),
        transcription_handler=TranscriptionHandler(manager, state),
        systemone_handler=SystemOneHandler(model_manager=manager, generation_state=state),
        generation_state=state,
    )

    def shutdown() -> None:
        state.shutdown()
        manager.shutdown()

    return app, shutdown


def build_upstream_app(upstream: str, timeout: float = 600.0):
    """An ASGI app that forwards every request to the OpenAI-compatible server at `upstream` (vLLM's, on a GPU) and
    streams its reply back as it comes; an upstream that cannot be reached is HTTP 502. (A reverse proxy is a few
    lines on httpx, the openai client's HTTP library; no maintained ASGI proxy is among the dependencies.)"""
    import httpx

    from llm_recipes.serving.guard import error_body, send_json

    client = httpx.AsyncClient(base_url=upstream.rstrip("/"), timeout=timeout)
    dropped = {b"host", b"content-length", b"connection", b"transfer-encoding"}

    async def app(scope, receive, send) -> None:
        if scope["type"] != "http":
            return
        body, more = b"", True
        while more:
            message = await receive()
            body, more = body + message.get("body", b""), message.get("more_body", False)
        request = client.build_request(
            scope["method"], scope["path"], params=scope.get("query_string", b"").decode("latin-1"), content=body,
            headers=[(k.decode("latin-1"), v.decode("latin-1")) for k, v in scope["headers"] if k not in dropped])
        try:
            response = await client.send(request, stream=True)
        except httpx.HTTPError as err:
            return await send_json(send, 502, error_body(502, f"upstream {upstream}: {type(err).__name__}: {err}",
                                                         "upstream_unreachable"))
        try:
            headers = [(k.encode("latin-1"), v.encode("latin-1")) for k, v in response.headers.items()
                       if k.lower() not in ("content-length", "content-encoding", "transfer-encoding", "connection")]
            await send({"type": "http.response.start", "status": response.status_code, "headers": headers})
            async for chunk in response.aiter_bytes():
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
            await send({"type": "http.response.body", "body": b"", "more_body": False})
        finally:
            await response.aclose()

    def shutdown() -> None:
        try:
            asyncio.run(client.aclose())
        except RuntimeError:  # called inside a running loop: the process is ending anyway
            pass

    return app, shutdown


def build_app(args: ServeArguments):
    """The guarded app and a shutdown function (frees the model)."""
    check_args(args)
    settings = GuardSettings(
        served_model=args.model_name_or_path, model_version=args.model_version or model_version(args.model_name_or_path),
        system_prompt=args.system_prompt, refusal=args.refusal,
        input_filters=build_filters(args.input_filters, "input_filters"),
        output_filters=build_filters(args.output_filters, "output_filters"),
        max_tokens=args.max_tokens, max_request_bytes=args.max_request_bytes, max_concurrent=args.max_concurrent,
        api_key=args.api_key,
        generation_config=None if args.upstream else model_generation_config(args.model_name_or_path),
    )
    if args.upstream:
        app, shutdown = build_upstream_app(args.upstream, args.upstream_timeout)
    else:
        app, shutdown = build_transformers_app(args.model_name_or_path, args.device, args.dtype)
    log = RequestLog(args.log_file)  # after the model loaded: a run that fails to start writes nothing
    return Guard(app, settings, log), shutdown


def uvicorn_server(app, args: ServeArguments):
    import uvicorn

    return uvicorn.Server(uvicorn.Config(app, host=args.host, port=args.port, log_level=args.log_level))


def serve(args: ServeArguments) -> None:
    """Serve until interrupted (Ctrl-C)."""
    app, shutdown = build_app(args)
    server = uvicorn_server(app, args)
    logger.info("serving %s on http://%s:%d/v1 (log: %s)", args.model_name_or_path, args.host, args.port,
                args.log_file or "off")
    try:
        server.run()
    finally:
        shutdown()


@contextlib.contextmanager
def serve_app_in_thread(app, host: str = "127.0.0.1", port: int = 0, log_level: str = "warning",
                        timeout: float = 120.0) -> Iterator[str]:
    """Serve an ASGI app on uvicorn in a background thread; yields its root URL `http://host:port` (port 0: a free
    port)."""
    import uvicorn

    server = uvicorn.Server(uvicorn.Config(app, host=host, port=port, log_level=log_level))
    thread = threading.Thread(target=lambda: asyncio.run(server.serve()), name="llm-recipes-serve", daemon=True)
    thread.start()
    try:
        for _ in range(int(timeout * 20)):
            if server.started or not thread.is_alive():
                break
            threading.Event().wait(0.05)
        if not server.started:
            raise RuntimeError(f"the server did not start on {host}:{port}")
        yield f"http://{host}:{server.servers[0].sockets[0].getsockname()[1]}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)


@contextlib.contextmanager
def serve_in_thread(args: ServeArguments, timeout: float = 120.0) -> Iterator[str]:
    """Serve in a background thread (tests, benchmarks, the toy deploy); yields the base URL `http://host:port/v1`.
    With port 0 the system picks a free port."""
    app, shutdown = build_app(args)
    try:
        with serve_app_in_thread(app, args.host, args.port, args.log_level, timeout) as root:
            yield f"{root}/v1"
    finally:
        shutdown()
