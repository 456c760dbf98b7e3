"""``make fuzz``: OpenAI's own request schema, driven through schemathesis against a live server.

    python bench/fuzz.py [--config config.toml] [--seconds 240] [--max-tokens 8] [--request-timeout 60]

Serves ``--config``'s models on a free local port and sends schemathesis-generated requests (valid ones per
OpenAI's schema, and invalid ones) for every route in ``bench/openai_openapi_served.json`` (the cut of
openai/openai-openapi; ``bench/openapi_cut.py``), sharing ``--seconds`` between the routes. The ``model``
of chat and embeddings bodies is set to the served one (else every request would be a 404), and
``max_tokens`` / ``max_completion_tokens`` are capped so a generated 2**31 does not run for hours.

Reports, per route: requests by status class, 5xx (must be 0), timeouts (must be 0) and response-schema
mismatches of 200 answers against OpenAI's response schema (non-streaming), with a few examples of each.
Exits 1 when there is any 5xx or timeout.
"""

from __future__ import annotations

import argparse
import json
import time
from collections import Counter
from pathlib import Path
from typing import Any

import requests
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis.errors import Unsatisfiable
from realizar_ort.server.app import create_app
from realizar_ort.server.live import LiveServer
from schemathesis.specs.openapi.checks import response_schema_conformance

from realizar_ort.config import load_config

SPEC = Path(__file__).with_name("openai_openapi_served.json")
ROOT = Path(__file__).resolve().parents[1]


def _fix_body(case: Any, model: str | None, max_tokens: int) -> None:
    body = case.body
    if not isinstance(body, dict):
        return
    if model is not None and "model" in body:
        body["model"] = model
    for key in ("max_tokens", "max_completion_tokens"):
        value = body.get(key)
        if isinstance(value, (int, float)) and not isinstance(value, bool) and value > max_tokens:  # 1e3 too
            body[key] = max_tokens
    if body.get("max_tokens") is None and body.get("max_completion_tokens") is None and "messages" in body:
        # absent or null: the server's default_max_tokens (512) would apply
        body["max_tokens"] = max_tokens


def fuzz_operation(op: Any, url: str, model: str | None, seconds: float, max_tokens: int,
                   timeout: float) -> dict[str, Any]:
    stats: dict[str, Any] = {"statuses": Counter(), "5xx": [], "timeouts": [], "schema_mismatches": [], "requests": 0}
    session = requests.Session()

    def one(case: Any) -> None:
        _fix_body(case, model, max_tokens)
        stats["requests"] += 1
        try:
            response = case.call(base_url=url, session=session, timeout=timeout)
        except requests.Timeout:
            stats["timeouts"].append({"path": case.path, "body": json.dumps(case.body, default=repr)[:2000],
                                      "at": time.strftime("%H:%M:%S")})
            return
        status = response.status_code
        stats["statuses"][f"{status // 100}xx"] += 1
        if status >= 500:
            stats["5xx"].append({"status": status, "request": json.dumps(case.body, default=repr)[:2000],
                                 "answer": response.text[:300]})
        body = case.body if isinstance(case.body, dict) else {}
        # Not checked against the response schema: streams (SSE, no schema) and base64 embeddings (OpenAI's
        # schema says array, but OpenAI itself answers base64 with a string, as we do).
        unchecked = body.get("stream") is True or body.get("encoding_format") == "base64"
        if status == 200 and not unchecked:
            try:
                case.validate_response(response, checks=[response_schema_conformance])
            except (Exception, BaseExceptionGroup) as exc:  # noqa: BLE001 - schemathesis raises a failure group
                stats["schema_mismatches"].append({"request": case.as_curl_command(), "why": str(exc)[:600]})

    class _Done(Exception):
        pass

    for mode in (schemathesis.GenerationMode.POSITIVE, schemathesis.GenerationMode.NEGATIVE):
        mode_deadline = time.monotonic() + seconds / 2  # half the time valid requests, half invalid ones

        def until(deadline: float) -> Any:
            def bounded(case: Any) -> None:
                if time.monotonic() > deadline:
                    raise _Done
                one(case)
            return bounded

        run = settings(max_examples=100_000, deadline=None, database=None, phases=[Phase.generate],
                       suppress_health_check=list(HealthCheck))(given(case=op.as_strategy(mode))(until(mode_deadline)))
        try:
            run()
        except (_Done, Unsatisfiable):  # time is up; or no invalid request exists (GET /models has no inputs)
            pass
        except Exception as exc:  # noqa: BLE001 - hypothesis re-raises _Done wrapped, or a generation error
            if "_Done" not in repr(exc):
                stats.setdefault("errors", []).append(repr(exc)[:300])
    stats["statuses"] = dict(stats["statuses"])
    return stats


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", type=Path, default=ROOT / "config.toml")
    parser.add_argument("--seconds", type=float, default=240.0, help="total time, shared between the routes")
    parser.add_argument("--max-tokens", type=int, default=8)
    parser.add_argument("--request-timeout", type=float, default=60.0)
    parser.add_argument("--report", type=Path, default=None, help="also write the report as JSON here")
    args = parser.parse_args()

    config = load_config(args.config)
    llm_name = (config.llm.name or config.llm.path.name) if config.llm else None
    emb_name = (config.embedding.name or config.embedding.path.name) if config.embedding else None
    schema = schemathesis.openapi.from_path(str(SPEC))
    operations = [result.ok() for result in schema.get_all_operations()]
    weights = {"/chat/completions": 0.6, "/embeddings": 0.25}
    report: dict[str, Any] = {}
    with LiveServer(create_app(config)) as live:
        url = live.url + "/v1"
        for op in operations:
            share = weights.get(op.path, 0.15 / max(1, len(operations) - 2))
            model = llm_name if op.path == "/chat/completions" else emb_name if op.path == "/embeddings" else None
            report[f"{op.method.upper()} {op.path}"] = fuzz_operation(op, url, model, args.seconds * share,
                                                                      args.max_tokens, args.request_timeout)
    totals = {k: sum(len(r[k]) if isinstance(r[k], list) else r[k] for r in report.values())
              for k in ("requests", "5xx", "timeouts", "schema_mismatches")}
    for name, r in report.items():
        print(f"{name}: {r['requests']} requests {r['statuses']}, 5xx {len(r['5xx'])}, timeouts "
              f"{len(r['timeouts'])}, response-schema mismatches {len(r['schema_mismatches'])}")
        for kind in ("5xx", "timeouts", "schema_mismatches", "errors"):
            for example in r.get(kind, [])[:2]:
                print(f"  {kind}: {json.dumps(example)[:700]}")
    print(f"total: {totals}")
    if args.report is not None:
        args.report.write_text(json.dumps({"totals": totals, "routes": report}, indent=1, default=str))
    broken = any(r.get("errors") or not r["requests"] for r in report.values())  # a fuzz that sent nothing
    return 1 if totals["5xx"] or totals["timeouts"] or broken else 0


if __name__ == "__main__":
    raise SystemExit(main())
