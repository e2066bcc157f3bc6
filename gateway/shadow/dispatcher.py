"""The shadow: copy a request to a second backend in the background, then compare the two answers.

Guarantees, in order of importance:

1. The client never waits for, or sees, the shadow. The primary is proxied exactly as without it; the only thing
   on its path is a ``ShadowTap`` that copies bytes (capped) while they stream by. The copy is sent once the
   primary exchange is complete, from a task the handler does not await.
2. Bounded: at most ``PENDING`` (``CONCURRENCY`` + ``QUEUE``) copies exist at once, counting those still being
   captured beside an in-flight primary; beyond that a request is not shadowed and is counted as
   ``skipped{queue_full}``. At most ``CONCURRENCY`` exchanges run, the rest wait. Every copy holds at most
   ``max_body`` of request and ``RESPONSE_CAPTURE`` of each answer, so the shadow's memory is bounded by
   ``PENDING x (max_body + 2 x RESPONSE_CAPTURE)`` whatever the targets do. Every exchange has its own overall
   timeout and its own connection pool, so a hanging, slow or dead shadow target costs that memory and nothing
   else.
   A target that keeps failing (refused, reset, timed out: ``TRIP_AFTER`` in a row) is left alone
   by a circuit (``gateway.protect.Circuit``), one probe per cooldown: its copies are counted as ``skipped{target_down}`` instead of
   spending connection attempts and records on a dead service (the figure the benchmark measures).
3. Tracked: tasks are kept in a set and drained (or cancelled after a grace period) at shutdown.

Comparison runs in a single worker thread so a large JSON document cannot stall the event loop; results go to the
``DiffStore`` writer queue. On a ``noise`` share of safe requests the legacy backend is asked a second time and the
fields that differ between its two answers are learned as noise (the idea of Diffy's primary/secondary pair). A
field becomes noise only past a threshold (``gateway.stores.diff_schema.is_noise``), so one unlucky write between the two reads
cannot hide a real mismatch.

Tests and benchmarks wait for the background work with ``await dispatcher.settle()``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import weakref
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

from aiohttp import web

from gateway.compare.answers import compare, noisy_fields
from gateway.compare.rules import Captured, CompareRules, compile_rules
from gateway.compare.verdict import Difference
from gateway.config.model import SAFE_METHODS, Backend, CircuitSpec, ShadowSpec
from gateway.errors import GatewayError
from gateway.proxy import upstream
from gateway.proxy.headers import SHADOW_HEADER, Headers
from gateway.proxy.protect import CLOSED, OPEN, Circuit
from gateway.proxy.upstream import Upstreams
from gateway.rollout import decision as rollout
from gateway.shadow.pacer import Pacer
from gateway.shadow.tap import RESPONSE_CAPTURE, ShadowTap
from gateway.stores.api import ComparisonStore
from gateway.stores.diff_schema import MAX_NOISE_FIELDS, is_noise
from gateway.stores.diffs import Record
from gateway.telemetry.recorder import Recorder
from gateway.telemetry.stats import StatsRegistry
from gateway.telemetry.tracing import current as current_span
from observability.tracing import TRACEPARENT

if TYPE_CHECKING:
    from gateway.proxy.forward import Outcome
    from gateway.routing.table import Route

log = logging.getLogger("strangler.shadow")

CONCURRENCY = 64
QUEUE = 256
PENDING = CONCURRENCY + QUEUE
PER_ITERATION = 2   # copies compared and recorded per event-loop iteration at most (see Pacer)
INLINE_COMPARE = 8 * 1024   # bytes of both bodies up to which a comparison runs on the event loop
TRIP_AFTER = 5          # consecutive failed exchanges before a shadow target's circuit opens (target_down)
COOLDOWN = 1.0          # seconds an open target is left alone before the next probe
LEARN_FIRST = 20
REDACTED = frozenset({"authorization", "proxy-authorization", "cookie", "set-cookie"})
DEFAULT_SPEC = ShadowSpec()
_DEFAULT_RULES: CompareRules | None = None


def default_rules() -> CompareRules:
    global _DEFAULT_RULES
    if _DEFAULT_RULES is None:
        _DEFAULT_RULES = compile_rules()
    return _DEFAULT_RULES


class ShadowDispatcher:
    def __init__(self, store: ComparisonStore, upstreams: Upstreams, stats: StatsRegistry, recorder: Recorder,
                 observed: Callable[[Route], None]) -> None:
        self.store = store
        self.upstreams = upstreams
        self.stats = stats
        self.recorder = recorder
        self.observed = observed    # a comparison finished on this route (the rollout's guard judges it)
        self._tasks: set[asyncio.Task[None]] = set()
        # Every copy alive: being captured beside its primary, queued, or running. Weak, so a copy whose primary
        # was abandoned (client gone before ``submit``) leaves the count as soon as the request is dropped.
        self._live: weakref.WeakSet[ShadowTap] = weakref.WeakSet()
        self.concurrency, self.pending = CONCURRENCY, PENDING
        self._targets: dict[str, Circuit] = {}    # shadow target -> its circuit (target_down while open)
        self._slots = asyncio.Semaphore(CONCURRENCY)
        self._pacer = Pacer(PER_ITERATION)
        self._compare_pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="strangler-compare")
        self.completed = 0
        self._learned: dict[str, int] = {}
        self._noise_samples, self._noise_fields = self._load_noise()
        self.noise: dict[str, frozenset[str]] = {r: self._noise_set(r) for r in self._noise_fields}

    def _load_noise(self) -> tuple[dict[str, int], dict[str, dict[str, int]]]:
        return self.store.noise_counts()

    def _noise_set(self, route: str) -> frozenset[str]:
        samples = self._noise_samples.get(route, 0)
        return frozenset(f for f, n in self._noise_fields.get(route, {}).items() if is_noise(n, samples))

    def _count_noise(self, route: str, fields: frozenset[str]) -> None:
        self._noise_samples[route] = self._noise_samples.get(route, 0) + 1
        counts = self._noise_fields.setdefault(route, {})
        for f in fields:
            if f in counts or len(counts) < MAX_NOISE_FIELDS:
                counts[f] = counts.get(f, 0) + 1
        self.noise[route] = self._noise_set(route)

    # -- on the request path ---------------------------------------------------------------------------------------

    def begin(self, route: Route, decision: rollout.Decision, request: web.BaseRequest, raw_target: str,
              headers: Headers) -> ShadowTap | None:
        """Decide whether this request is shadowed; if so return the tap that copies it. Cheap."""
        spec = (route.spec.shadow if route.spec is not None else None) or DEFAULT_SPEC
        reverse = decision.effective_stage == "extracted"
        if request.method not in spec.methods:
            self._skip(route.name, "method")
            return None
        if not rollout.in_share(route.name + "/shadow", spec.percent, rollout.sticky_value(request.headers, request.cookies, spec.key)):
            self._skip(route.name, "sampled_out")
            return None
        # A full queue first: it is the common case when the target is slow, and every request then takes this
        # exit, so it must be the cheapest one.
        if len(self._live) >= self.pending:
            self._skip(route.name, "queue_full")
            return None
        assert decision.shadow_to is not None
        if self._down(decision.shadow_to.name):
            self._skip(route.name, "target_down")
            return None
        length = request.content_length
        if length is not None and length > spec.max_body:
            self._skip(route.name, "body_too_large")
            return None
        if request.headers.get("Upgrade"):
            self._skip(route.name, "upgrade")
            return None
        tap = ShadowTap(route, spec, decision.shadow_to, decision.backend, request.method, raw_target, headers,
                        reverse)
        span = current_span()
        if span is not None:
            tap.trace = span
            tap.trace_id = span.trace_hex if span.sampled else None  # links the comparison to a stored trace
        self._live.add(tap)
        return tap

    def submit(self, tap: ShadowTap, outcome: Outcome) -> None:
        """Called after the primary exchange finished; schedules the copy. Never raises, never waits."""
        if tap.failed or outcome.error is not None or outcome.aborted:
            self._skip(tap.route.name, "primary_error")
            return
        if tap.too_large:
            self._skip(tap.route.name, "body_too_large")
            return
        if not tap.req_complete:
            self._skip(tap.route.name, "incomplete_request")
            return
        if len(self._tasks) >= self.pending:
            self._skip(tap.route.name, "queue_full")
            return
        tap.primary_ms = round(outcome.upstream_seconds * 1000, 3)
        task = asyncio.get_running_loop().create_task(self._run(tap))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _off_loop(self, fn: Any, first: Captured, second: Captured, *args: Any) -> Any:
        """Run a comparison: in the worker thread when the bodies are large enough that it could hold up the event
        loop, inline when they are small (most API answers), where a thread hand-off would cost more than the
        comparison itself."""
        if len(first.body) + len(second.body) <= INLINE_COMPARE:
            return fn(first, second, *args)
        return await asyncio.get_running_loop().run_in_executor(self._compare_pool, fn, first, second, *args)

    def _skip(self, route: str, reason: str) -> None:
        stats = self.stats.route(route)
        stats.skipped[reason] = stats.skipped.get(reason, 0) + 1
        if reason != "sampled_out" and reason != "method":
            self.store.skip(route, reason)

    def _circuit(self, target: str) -> Circuit:
        circuit = self._targets.get(target)
        if circuit is None:
            circuit = self._targets[target] = Circuit(CircuitSpec(TRIP_AFTER, COOLDOWN))
        return circuit

    def _down(self, target: str) -> bool:
        return not self._circuit(target).allow()

    def _target_answered(self, target: str, ok: bool) -> None:
        circuit = self._circuit(target)
        was = circuit.state
        if ok:
            circuit.success()
            return
        circuit.failure()
        if circuit.state == OPEN and was == CLOSED:
            log.warning("shadow target %s failed %d times in a row; copies skipped (target_down), probing every "
                        "%gs", target, circuit.failures, circuit.spec.cooldown)

    @property
    def depth(self) -> int:
        return len(self._tasks)

    def set_limits(self, concurrency: int = CONCURRENCY, pending: int = PENDING) -> None:
        """Change the bounds (tests and benchmarks use small ones); call while no shadow work is pending."""
        self.concurrency, self.pending = concurrency, max(pending, concurrency)
        self._slots = asyncio.Semaphore(concurrency)

    async def settle(self, timeout: float = 10.0) -> None:
        """Wait until no copy is being captured, queued or running, and the store has committed every record
        (tests and benchmarks; raises ``TimeoutError``)."""
        deadline = time.monotonic() + timeout
        while self._live or self._tasks:
            if time.monotonic() > deadline:
                raise TimeoutError(f"shadow work still pending after {timeout:g}s: {len(self._tasks)} task(s)")
            if self._tasks:
                await asyncio.wait(list(self._tasks), timeout=0.05)
            else:
                await asyncio.sleep(0.005)
        left = max(0.0, deadline - time.monotonic())
        if not await asyncio.to_thread(self.store.flush, left):
            raise TimeoutError(f"comparison store still writing after {timeout:g}s")

    # -- in the background -----------------------------------------------------------------------------------------

    async def _run(self, tap: ShadowTap) -> None:
        try:
            async with self._slots:
                await self._exchange(tap)
        except asyncio.CancelledError:
            raise
        except Exception:  # a bug here must never reach the primary side; log it loudly instead
            log.exception("shadow comparison failed for route %s", tap.route.name)
        finally:
            self.completed += 1

    async def _exchange(self, tap: ShadowTap) -> None:
        spec = tap.spec
        body = tap.request_body() if tap.req_size else None
        span = self.recorder.tracing.shadow_span(tap)
        headers = [*tap.headers, (SHADOW_HEADER, "1"), (TRACEPARENT, span.traceparent)]
        started = time.perf_counter()
        shadow, error = await self._fetch(tap.target_backend, tap.method, tap.raw_target, headers, body,
                                          spec.timeout)
        shadow_ms = (time.perf_counter() - started) * 1000
        span.end()
        await self._pacer.turn()
        self._target_answered(tap.target_backend.name, error is None)
        primary = tap.captured_primary()
        route_stats = self.stats.route(tap.route.name)
        failed = error is not None or (shadow is not None and shadow.status >= 500 > primary.status)
        route_stats.shadow.request(shadow_ms / 1000, failed)
        record = Record(route=tap.route.name, method=tap.method, target=tap.raw_target, verdict="error",
                        trace_id=tap.trace_id, primary_backend=tap.primary_backend.name,
                        shadow_backend=tap.target_backend.name, primary_status=primary.status,
                        primary_ms=tap.primary_ms, shadow_ms=round(shadow_ms, 3),
                        request_headers=_redact(tap.headers), request_body=body,
                        primary_headers=_redact(primary.headers), primary_body=primary.body,
                        primary_truncated=primary.truncated, reverse=tap.reverse)
        if shadow is not None:
            record.shadow_status = shadow.status
            record.shadow_headers = _redact(shadow.headers)
            record.shadow_body = shadow.body
            record.shadow_truncated = shadow.truncated
        if error is not None:
            record.reason = error
        elif failed:
            record.reason = f"shadow answered {shadow.status}"  # type: ignore[union-attr]
        else:
            await self._maybe_learn_noise(tap, primary)
            rules = (spec.compare.rules if spec.compare.rules is not None else default_rules())
            legacy_side, new_side = (shadow, primary) if tap.reverse else (primary, shadow)
            noise = self.noise.get(tap.route.name, frozenset())
            result = await self._off_loop(compare, legacy_side, new_side, rules, noise)
            record.verdict = result.verdict
            record.differences = [_difference(d) for d in result.differences]
            record.ignored = [_difference(d) for d in result.ignored]
        route_stats.shadow.verdict(record.verdict in ("mismatch", "error"))
        self.recorder.shadow_done(tap.route.name, tap.target_backend.name, span, record.shadow_status or 0,
                                  record.reason if record.verdict == "error" else None, record.verdict,
                                  shadow_ms / 1000)
        self.observed(tap.route)   # the guard of a shadowed route judges the shadow's errors and mismatches
        self.store.put(record)

    async def _fetch(self, backend: Backend, method: str, target: str, headers: Headers, body: bytes | None,
                     timeout: float) -> tuple[Captured | None, str | None]:
        pool = self.upstreams.pool(backend, "shadow")
        try:
            async with asyncio.timeout(timeout):
                resp = await upstream.open_response(pool, method, target, headers, body)
                try:
                    data, truncated = await resp.read(RESPONSE_CAPTURE)
                finally:
                    resp.close()
        except TimeoutError:
            return None, f"timeout after {timeout:g}s"
        except GatewayError as exc:
            return None, exc.code + ": " + exc.detail
        except (OSError, ValueError, RuntimeError) as exc:  # garbage from the target must not escape
            return None, f"{type(exc).__name__}: {exc}"
        headers_out = tuple((k.decode("latin-1"), v.decode("latin-1")) for k, v in resp.raw_headers)
        return Captured(resp.status, headers_out, data, truncated), None

    async def _maybe_learn_noise(self, tap: ShadowTap, primary: Captured) -> None:
        share = tap.spec.compare.noise
        if share <= 0 or tap.method not in SAFE_METHODS or tap.reverse:
            return
        # Learn fast at first: the first LEARN_FIRST safe requests of a route are all double-checked, so noisy
        # fields stop showing up as mismatches within seconds instead of after hundreds of requests.
        seen = self._learned.get(tap.route.name, 0)
        if seen >= LEARN_FIRST and not rollout.in_share(tap.route.name + "/noise", share, None):
            return
        self._learned[tap.route.name] = seen + 1
        span = self.recorder.tracing.noise_span(tap)
        headers = [*tap.headers, (SHADOW_HEADER, "1"), (TRACEPARENT, span.traceparent)]
        second, error = await self._fetch(tap.primary_backend, tap.method, tap.raw_target, headers, None,
                                          tap.spec.timeout)
        self.recorder.tracing.exchange_done(span, second.status if second is not None else 0, error)
        if second is None or error is not None:
            return
        rules = tap.spec.compare.rules if tap.spec.compare.rules is not None else default_rules()
        fields = await self._off_loop(noisy_fields, primary, second, rules)
        self._count_noise(tap.route.name, fields)
        self.store.noise_sample(tap.route.name, fields)

    async def replay(self, sample: dict[str, Any], route: Route) -> Record:
        """Send a recorded request to the route's extracted backend again and compare with the recorded legacy
        answer (``strangler replay``). Redacted headers are left out (the extracted service sees the request
        without credentials); a request whose body was not recorded whole is not replayed."""
        assert route.to is not None
        req = sample["request"]
        body = _raw_body(req["body"])
        headers = [(k, v) for k, v in req["headers"] if v != "[redacted]"] + [(SHADOW_HEADER, "1")]
        spec = (route.spec.shadow if route.spec else None) or DEFAULT_SPEC
        # With reverse_shadow the extracted backend answered the client and legacy was the copy.
        legacy = sample["shadow"] if sample["primary"]["backend"] == route.to.name else sample["primary"]
        record = Record(route=route.name, method=req["method"], target=req["target"], verdict="error",
                        primary_backend=legacy["backend"] or "", shadow_backend=route.to.name,
                        primary_status=legacy["status"], request_headers=[tuple(h) for h in req["headers"]],
                        request_body=body, primary_headers=[tuple(h) for h in legacy["headers"]],
                        primary_body=_raw_body(legacy["body"]), primary_truncated=legacy["truncated"], replay=True,
                        reason=f"replay of #{sample['id']}")
        if req.get("truncated"):
            record.reason += ": the request body was not recorded whole"
            self.store.put(record)
            return record
        started = time.perf_counter()
        shadow, error = await self._fetch(route.to, req["method"], req["target"], headers, body, spec.timeout)
        record.shadow_ms = round((time.perf_counter() - started) * 1000, 3)
        if shadow is None:
            record.reason += f": {error}"
        else:
            primary = Captured(legacy["status"] or 0, tuple(record.primary_headers),
                               record.primary_body or b"", legacy["truncated"])
            rules = spec.compare.rules if spec.compare.rules is not None else default_rules()
            noise = self.noise.get(route.name, frozenset())
            result = await self._off_loop(compare, primary, shadow, rules, noise)
            record.verdict = result.verdict
            record.differences = [_difference(d) for d in result.differences]
            record.ignored = [_difference(d) for d in result.ignored]
            record.shadow_status = shadow.status
            record.shadow_headers = _redact(shadow.headers)
            record.shadow_body = shadow.body
            record.shadow_truncated = shadow.truncated
        self.store.put(record)
        return record

    async def drain(self, grace: float = 5.0) -> None:
        """Shutdown: let running comparisons finish for a moment, then cancel the rest."""
        if self._tasks:
            _done, pending = await asyncio.wait(list(self._tasks), timeout=grace)
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)
        self._compare_pool.shutdown(wait=False, cancel_futures=True)
        with contextlib.suppress(Exception):
            self.store.close()


def _redact(headers: Any) -> list[tuple[str, str]]:
    return [(k, "[redacted]" if k.lower() in REDACTED else v) for k, v in headers]


def _difference(d: Difference) -> dict[str, Any]:
    return {"path": d.path, "field": d.field, "kind": d.kind, "legacy": d.legacy, "shadow": d.shadow}


def _raw_body(body: dict[str, Any] | None) -> bytes | None:
    if not body:
        return None
    if body.get("text") is not None:
        return body["text"].encode("utf-8")
    if body.get("base64"):
        import base64

        return base64.b64decode(body["base64"])
    return None
