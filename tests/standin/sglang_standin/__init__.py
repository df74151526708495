"""TEST DOUBLE: a hand-written stand-in for SGLang 0.5.23's HTTP server. Never used in production.

Kept only for process faults SGLang's real frontend cannot be made to produce, or produces only after a
20-45 s start: ignoring SIGTERM while idle, never becoming ready, starting in well under a second for the
launcher/cleanup tests (tests/engine/test_sglang_backend_lifecycle.py, the SIGKILL-and-restart test in
tests/reliability/test_backend_restart.py, the never-ready test in test_engine_process_faults.py).
Everything about SGLang's wire protocol is tested against SGLang's real frontend with a simulated scheduler
(dev/sglang_dev/sglang_sim). Known differences from the real frontend (found with it): /health is cheap here
(a one-token generation there), top_k=0 is refused even when greedy, a missing adapter path and an unloaded
adapter fail with messages of ours, a body without `Content-Type: application/json` is accepted.

Launched exactly like SGLang (`python -m sglang_standin <the argv the engine builds>`): tests put
`tests/standin` on PYTHONPATH and pass `--sglang-module sglang_standin`, so the engine's real launch,
readiness, streaming, adapter and shutdown code runs against it. It parses its argv with argparse
(exit 2 on an unknown flag, like SGLang) and speaks SGLang's wire protocol as
/work/shared/design/SGLANG_PROTOCOL.md describes: cumulative `text`, the `finish_reason` dict, 400 on
unknown sampling keys, an error event after streaming began, adapter replies, abort on disconnect.

It generates REAL tokens with the model at `--model-path` (transformers, plus peft for LoRA adapters)
one forward pass at a time in one worker thread, so seeds and adapters measurably change the output.
It deliberately encodes the protocol on its own (it imports nothing from sglang_engine), so a wrong
key in the engine is caught rather than mirrored.

Test knobs (environment):
  SGLANG_STANDIN_STARTUP_DELAY  seconds /health answers 503 after the model loaded (default 0)
  SGLANG_STANDIN_NEVER_READY    "1": /health never answers 200
  SGLANG_STANDIN_TOKEN_DELAY    seconds to sleep between tokens (default 0)
  SGLANG_STANDIN_IGNORE_SIGTERM "1": ignore SIGTERM (like SGLang draining forever), in the child too
  SGLANG_STANDIN_SKIP_MODEL     "1": load no model (process-lifecycle tests); /generate answers 503
Debug: GET /_standin/requests lists what it received (generate bodies, aborts, adapter calls).

Layout: `protocol.py` (argv and request validation: what SGLang accepts), `model.py` (tokens
from the model, in one worker thread), `server.py` (the HTTP endpoints), `__main__.py`.
"""
