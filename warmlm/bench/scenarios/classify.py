"""`classify`: label scoring (`/v1/classify`) against its yardsticks, measured in one run.

1. Single items, one call each, side by side with (a) the raw `llama_decode` prefill of exactly
   as many tokens as the item needs (the tokens after the cached instruction prefix, counted
   with the server's own classifier code; timed in this process on the same model while the
   server is idle) and (b) generating the label (same model, same instruction as system prompt,
   greedy, up to 8 new tokens; both paths with the instruction cached). The three are timed
   back to back for every item, in rotating order, so a busy machine slows all three alike;
   ratios are per item, then the median.
2. Batched: 64 short inputs in one call, each time after a raw prefill of one 512-token chunk.
3. Accuracy, macro-F1 and the confusion matrix of both methods on the labeled data
   (`--data FILE.jsonl` of {"text", "label"}; default: the shipped bilingual sample).
4. Structured output: chat completions with `response_format` json_schema over a set of
   schemas (objects, enums, arrays, nested), each output parsed and validated.
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from warmlm.bench.context import BenchContext
from warmlm.bench.markdown import fmt, ms, table
from warmlm.bench.options import positive
from warmlm.bench.scenarios.base import Needs, Result, Results, Scenario, ok
from warmlm.bench.stats import mean, median, percentile, ratio
from warmlm.bench.targets import Target
from warmlm.tasks.classify import (
    DEFAULT_LABELS,
    SENTIMENT,
    Classifier,
    ClassifyRequest,
    Confusion,
    instruction,
)

DATA = Path(__file__).resolve().parent.parent / "data" / "sentiment.jsonl"
SINGLE_GOAL = 1.15  # p50 latency ÷ raw prefill of the item's tokens, at most
SPEEDUP_GOAL = 1.2  # generating the label ÷ scoring it, at least
BATCH_GOAL = 0.9  # items/s ÷ (ceiling prefill tok/s ÷ mean item tokens), at least
BATCH_ITEMS = 64
GENERATE_TOKENS = 8
QUICK_ITEMS = 16
REPEATS = 3
CHUNK = 512  # tokens of one batch: the batched ceiling's prefill
STEP_TOKEN = 13  # any token: the decode step after the raw prefill
SETTLE = 0.02  # seconds between a reply and a raw prefill
ORDERS = (
    ("raw", "scored", "generated"),
    ("scored", "generated", "raw"),
    ("generated", "raw", "scored"),
)
OTHER = "(other)"


def add_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("classify")
    g.add_argument(
        "--data", type=Path, help="JSONL of {text, label} lines (default: the shipped sample)"
    )
    g.add_argument(
        "--classify-items",
        type=positive,
        help=f"items timed one by one (default: all; {QUICK_ITEMS} with --quick)",
    )


@dataclass(frozen=True)
class Row:
    text: str
    label: str


def load_rows(path: Path) -> list[Row]:
    rows = []
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        item = json.loads(line)
        if not isinstance(item, dict) or not item.get("text") or not item.get("label"):
            raise ValueError(f"{path}:{n}: expected {{'text': ..., 'label': ...}}")
        rows.append(Row(str(item["text"]), str(item["label"])))
    if not rows:
        raise ValueError(f"{path} has no rows")
    return rows


def labels_of(rows: list[Row]) -> tuple[str, ...]:
    found = tuple(dict.fromkeys(r.label for r in rows))
    if set(found) == set(DEFAULT_LABELS):
        return DEFAULT_LABELS
    return found


def task_for(labels: tuple[str, ...]) -> str:
    return SENTIMENT if labels == DEFAULT_LABELS else "Classify the user's text."


def parse_generated(text: str, labels: tuple[str, ...]) -> str:
    """The label a generated reply names: the one it starts with, else the first it mentions."""
    reply = text.strip().strip("\"'*`.:").lower()
    by_length = sorted(labels, key=len, reverse=True)
    for name in by_length:
        if reply.startswith(name.lower()):
            return name
    hits = [(reply.find(name.lower()), name) for name in by_length if name.lower() in reply]
    return min(hits)[1] if hits else OTHER


# -- the ceiling, in this process ----------------------------------------------------------------
class Probe:
    """Raw `llama_decode` prefill on the model the server runs, loaded in this process (the
    server is idle while it runs: every request has returned)."""

    def __init__(self, model_path: Path, threads: int) -> None:
        from warmlm.bench.ceiling import CeilingPlan, CeilingProbe

        plan = CeilingPlan((1,), 1, 16, (CHUNK,), REPEATS, CHUNK)
        self.probe = CeilingProbe(model_path, threads, plan.n_ctx(2048), plan)
        self.probe.prefill_seconds(16)  # first-call warm-up

    def counts(self, rows: list[Row], labels: tuple[str, ...]) -> list[int]:
        """Each item's prefilled tokens, counted by the server's own classifier code."""
        from warmlm.tasks.chat import ChatTemplate

        runner = self.probe.runner
        template = ChatTemplate(runner.chat_template(), **runner.special_tokens())
        clf = Classifier(
            template, lambda t, a, p: runner.tokenize(t, add_special=a, parse_special=p), 1 << 20
        )
        req = ClassifyRequest.build([r.text for r in rows], labels, task_for(labels))
        return clf.prepare(req).item_tokens

    def prefill(self, n: int) -> float | None:
        if not 0 < n <= CHUNK:  # the probe's text is one chunk long
            return None
        time.sleep(SETTLE)  # the server's threads stop polling for work
        return self.probe.prefill_seconds(n)

    def step(self, n: int) -> float:
        """Seconds of one decode step right after `prefill(n)`: what generating a one-token
        label costs on top of the prefill."""
        from warmlm.engine.runner import BatchToken

        t0 = time.perf_counter()
        self.probe.runner.decode([BatchToken(STEP_TOKEN, n, 0, True)])
        return time.perf_counter() - t0

    def close(self) -> None:
        self.probe.close()


# -- the server ------------------------------------------------------------------------------------
class Client:
    def __init__(self, url: str, api_key: str | None) -> None:
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self.http = httpx.AsyncClient(base_url=url.rstrip("/"), headers=headers, timeout=600)

    async def classify(
        self, inputs: list[str], labels: tuple[str, ...], task: str
    ) -> tuple[float, dict[str, Any]]:
        body = {"input": inputs, "labels": list(labels), "task": task}
        t0 = time.perf_counter()
        resp = await self.http.post("/v1/classify", json=body)
        seconds = time.perf_counter() - t0
        if resp.status_code != 200:
            raise RuntimeError(f"/v1/classify: HTTP {resp.status_code}: {resp.text[:300]}")
        return seconds, dict(resp.json())

    async def chat(
        self, messages: list[dict[str, str]], max_tokens: int, **extra: Any
    ) -> tuple[float, dict[str, Any]]:
        body = {"messages": messages, "max_tokens": max_tokens, "temperature": 0, **extra}
        t0 = time.perf_counter()
        resp = await self.http.post("/v1/chat/completions", json=body)
        seconds = time.perf_counter() - t0
        if resp.status_code != 200:
            raise RuntimeError(f"/v1/chat/completions: HTTP {resp.status_code}: {resp.text[:300]}")
        return seconds, dict(resp.json())

    async def close(self) -> None:
        await self.http.aclose()


async def side_by_side(
    client: Client,
    probe: Probe | None,
    rows: list[Row],
    labels: tuple[str, ...],
    counts: list[int],
    bar: Any,
) -> list[dict[str, Any]]:
    task = task_for(labels)
    system = instruction(task, labels, False)
    # warm both paths: the scoring prefix and the chat prefix cache hold the instruction
    await client.classify([rows[0].text], labels, task)
    await client.chat([{"role": "system", "content": system}, {"role": "user", "content": "hi"}], 2)
    out = []
    for i, (row, n) in enumerate(zip(rows, counts, strict=True)):
        item: dict[str, Any] = {"truth": row.label, "tokens": n, "raw_s": None}
        messages = [{"role": "system", "content": system}, {"role": "user", "content": row.text}]
        for step in ORDERS[i % len(ORDERS)]:
            if step == "raw":
                item["raw_s"] = probe.prefill(n) if probe is not None else None
                item["raw_step_s"] = probe.step(n) if probe and item["raw_s"] else None
            elif step == "scored":
                seconds, body = await client.classify([row.text], labels, task)
                usage = body["usage"]
                item["prefilled"] = usage["prompt_tokens"] - usage["cached_tokens"]
                item.update(scored=body["data"][0]["label"], scored_s=seconds)
            else:
                seconds, gen = await client.chat(messages, GENERATE_TOKENS)
                text = gen["choices"][0]["message"]["content"] or ""
                item.update(generated=parse_generated(text, labels), generated_s=seconds)
                item.update(generated_text=text, generated_tokens=gen["usage"]["completion_tokens"])
        out.append(item)
        bar.update()
    return out


async def batched(
    client: Client, probe: Probe | None, rows: list[Row], labels: tuple[str, ...]
) -> dict[str, Any]:
    shortest = sorted(rows, key=lambda r: len(r.text))
    texts = [shortest[i % len(shortest)].text for i in range(BATCH_ITEMS)]
    runs = []
    for _ in range(REPEATS):
        chunk_s = probe.prefill(CHUNK) if probe is not None else None
        seconds, body = await client.classify(texts, labels, task_for(labels))
        usage = body["usage"]
        tokens = usage["prompt_tokens"] - usage["cached_tokens"]
        items_per_s = BATCH_ITEMS / seconds
        ceiling = CHUNK / chunk_s / (tokens / BATCH_ITEMS) if chunk_s else None
        runs.append(
            {
                "seconds": seconds,
                "items_per_s": items_per_s,
                "mean_item_tokens": tokens / BATCH_ITEMS,
                "chunk_tps": CHUNK / chunk_s if chunk_s else None,
                "ceiling_items_per_s": ceiling,
                "ratio": ratio(items_per_s, ceiling),
            }
        )
    return {
        "items": BATCH_ITEMS,
        "runs": runs,
        "items_per_s": median([r["items_per_s"] for r in runs]),
        "mean_item_tokens": runs[-1]["mean_item_tokens"],
        "chunk_tps": median([r["chunk_tps"] for r in runs if r["chunk_tps"]]),
        "ceiling_items_per_s": median([r["ceiling_items_per_s"] for r in runs if r["ratio"]]),
        "ratio": median([r["ratio"] for r in runs if r["ratio"] is not None]),
    }


SCHEMAS: list[tuple[str, str, dict[str, Any]]] = [
    (
        "object",
        "Describe a person called Ana who is 31.",
        {
            "type": "object",
            "properties": {"name": {"type": "string"}, "age": {"type": "integer"}},
            "required": ["name", "age"],
            "additionalProperties": False,
        },
    ),
    (
        "enum",
        "What color is the sky on a clear day?",
        {"type": "object", "properties": {"color": {"enum": ["blue", "green", "red"]}}},
    ),
    (
        "array",
        "List three fruits.",
        {
            "type": "object",
            "properties": {
                "fruits": {
                    "type": "array",
                    "items": {"type": "string", "maxLength": 24},
                    "minItems": 1,
                    "maxItems": 5,
                }
            },
            "required": ["fruits"],
        },
    ),
    (
        "nested",
        "Give a famous book with its author and year.",
        {
            "type": "object",
            "properties": {
                "book": {
                    "type": "object",
                    "properties": {
                        "title": {"type": "string", "maxLength": 80},
                        "author": {
                            "type": "object",
                            "properties": {"first": {"type": "string"}, "last": {"type": "string"}},
                            "required": ["first", "last"],
                        },
                        "year": {"type": "integer"},
                    },
                    "required": ["title", "author", "year"],
                }
            },
            "required": ["book"],
        },
    ),
    (
        "types",
        "Rate this review: '这个手机很好用'.",
        {
            "type": "object",
            "properties": {
                "sentiment": {"enum": ["positive", "negative"]},
                "score": {"type": "number"},
                "spam": {"type": "boolean"},
                "note": {"type": ["string", "null"]},
            },
            "required": ["sentiment", "score", "spam"],
        },
    ),
    (
        "array of objects",
        "Name two planets and say whether each has rings.",
        {
            "type": "array",
            "items": {
                "type": "object",
                "properties": {"planet": {"type": "string"}, "rings": {"type": "boolean"}},
                "required": ["planet", "rings"],
            },
            "minItems": 2,
            "maxItems": 2,
        },
    ),
]


async def structured(client: Client) -> list[dict[str, Any]]:
    try:
        import jsonschema
    except ImportError:  # the test extra; without it, outputs are only parsed
        jsonschema = None  # type: ignore[assignment]
    out = []
    for name, prompt, schema in SCHEMAS:
        fmt_ = {"type": "json_schema", "json_schema": {"name": "answer", "schema": schema}}
        messages = [{"role": "user", "content": prompt}]
        error = None
        text, tokens, finish, seconds = "", 0, None, 0.0
        try:
            seconds, body = await client.chat(messages, 200, response_format=fmt_)
            text = body["choices"][0]["message"]["content"] or ""
            tokens, finish = body["usage"]["completion_tokens"], body["choices"][0]["finish_reason"]
            doc = json.loads(text)
            if jsonschema is not None:
                jsonschema.validate(doc, schema)
        except Exception as exc:  # refused, unparsable or invalid: recorded as a failure
            error = f"{type(exc).__name__}: {str(exc)[:200]}"
        out.append(
            {
                "schema": name,
                "seconds": seconds,
                "tokens": tokens,
                "finish_reason": finish,
                "valid": error is None,
                "validated": jsonschema is not None,
                "error": error,
                "output": text[:300],
            }
        )
    return out


def metrics(items: list[dict[str, Any]], key: str, labels: tuple[str, ...]) -> dict[str, Any]:
    c = Confusion(list(labels))
    for item in items:
        c.add(item["truth"], item[key])
    return {
        "accuracy": c.accuracy(),
        "macro_f1": c.macro_f1(),
        "columns": c.columns(),
        "rows": c.rows(),
    }


class Classify(Scenario):
    name = "classify"
    title = "Classification by label scoring"
    order = 80
    needs = Needs.SERVER

    async def run(self, ctx: BenchContext) -> Result:
        o = ctx.options
        data = getattr(o, "classify_data", None) or DATA
        rows = load_rows(Path(data))
        limit = getattr(o, "classify_items", None) or (QUICK_ITEMS if o.quick else len(rows))
        timed = rows[:limit]
        labels = labels_of(rows)
        probe = Probe(ctx.model_path(), o.threads) if o.own_server else None
        try:
            counts = probe.counts(timed, labels) if probe else [0] * len(timed)
            url = await ctx.server_url()
            client = Client(url, o.api_key)
            try:
                with ctx.progress(len(timed), "classify") as bar:
                    items = await side_by_side(client, probe, timed, labels, counts, bar)
                batch = await batched(client, probe, rows, labels)
                schemas = await structured(client)
            finally:
                await client.close()
        finally:
            if probe is not None:
                probe.close()
        return summarize(str(data), labels, items, batch, schemas)

    def markdown(self, result: Result) -> str:
        return render(result)

    def targets(self, results: Results) -> list[Target]:
        r = ok(results, self.name)
        get = (lambda k: r.get(k)) if r else (lambda k: None)
        schemas = r["structured"] if r else []
        valid = 100.0 * sum(s["valid"] for s in schemas) / len(schemas) if schemas else None
        return [
            Target(
                "single-item latency ÷ raw prefill of its tokens",
                get("single_over_ceiling_p50"),
                SINGLE_GOAL,
                at_most=True,
                note="median per item: HTTP round trip ÷ llama_decode of its prefilled tokens",
            ),
            Target(
                "generate-the-label latency ÷ scored latency",
                get("speedup_p50"),
                SPEEDUP_GOAL,
                note=f"median per item; greedy, ≤ {GENERATE_TOKENS} tokens, both cached; "
                f"bound with zero overhead {fmt(get('speedup_bound_p50'))}",
            ),
            Target(
                f"batched items/s ({BATCH_ITEMS} inputs) ÷ ceiling items/s",
                get("batch_over_ceiling"),
                BATCH_GOAL,
                note=f"ceiling = raw tok/s of a {CHUNK}-token chunk ÷ mean item tokens",
            ),
            Target(
                "scored accuracy − generated accuracy",
                get("accuracy_margin"),
                0.0,
                unit="",
                note="on the labeled data, same items",
            ),
            Target(
                "JSON-schema outputs that parse and validate",
                valid,
                100.0,
                unit="%",
                note=f"{len(schemas)} schemas: objects, enums, arrays, nested",
            ),
        ]


def summarize(
    data: str,
    labels: tuple[str, ...],
    items: list[dict[str, Any]],
    batch: dict[str, Any],
    schemas: list[dict[str, Any]],
) -> Result:
    scored_s = [i["scored_s"] for i in items]
    generated_s = [i["generated_s"] for i in items]
    comparable = [i for i in items if i["raw_s"] and i["tokens"] == i["prefilled"]]
    scored, generated = metrics(items, "scored", labels), metrics(items, "generated", labels)
    margin = None
    if scored["accuracy"] is not None and generated["accuracy"] is not None:
        margin = scored["accuracy"] - generated["accuracy"]
    return {
        "data": data,
        "labels": list(labels),
        "items": items,
        "token_count_mismatches": sum(1 for i in items if i["raw_s"] and i not in comparable),
        "scored_p50_s": median(scored_s),
        "scored_p95_s": percentile(scored_s, 95.0),
        "generated_p50_s": median(generated_s),
        "generated_p95_s": percentile(generated_s, 95.0),
        "raw_prefill_p50_s": median([i["raw_s"] for i in comparable]),
        "mean_item_tokens": mean([i["prefilled"] for i in items]),
        "single_over_ceiling_p50": median([i["scored_s"] / i["raw_s"] for i in comparable]),
        "speedup_p50": median([i["generated_s"] / i["scored_s"] for i in items]),
        "speedup_of_p50s": ratio(median(generated_s), median(scored_s)),
        "speedup_bound_p50": median(
            [(i["raw_s"] + i["raw_step_s"]) / i["raw_s"] for i in comparable if i.get("raw_step_s")]
        ),
        "batch": batch,
        "batch_over_ceiling": batch["ratio"],
        "scored": scored,
        "generated": generated,
        "accuracy_margin": margin,
        "structured": schemas,
    }


def render(r: Result) -> str:
    n = len(r["items"])
    latency = table(
        ["method", "p50 ms", "p95 ms", "accuracy", "macro-F1"],
        [
            [
                "scored (/v1/classify)",
                ms(r["scored_p50_s"]),
                ms(r["scored_p95_s"]),
                fmt(r["scored"]["accuracy"]),
                fmt(r["scored"]["macro_f1"]),
            ],
            [
                f"generated (≤ {GENERATE_TOKENS} tokens, greedy)",
                ms(r["generated_p50_s"]),
                ms(r["generated_p95_s"]),
                fmt(r["generated"]["accuracy"]),
                fmt(r["generated"]["macro_f1"]),
            ],
            ["raw prefill of the item's tokens", ms(r["raw_prefill_p50_s"]), "", "", ""],
        ],
    )
    b = r["batch"]
    batch = table(
        ["run", "seconds", "items/s", "mean item tokens", "raw chunk tok/s", "ceiling items/s",
         "ratio"],
        [
            [k + 1, fmt(x["seconds"]), fmt(x["items_per_s"]), fmt(x["mean_item_tokens"]),
             fmt(x["chunk_tps"]), fmt(x["ceiling_items_per_s"]), fmt(x["ratio"])]
            for k, x in enumerate(b["runs"])
        ],
    )  # fmt: skip

    def confusion(m: dict[str, Any]) -> str:
        return table(["true \\ predicted", *m["columns"]], m["rows"])

    schemas = table(
        ["schema", "valid", "tokens", "ms", "finish"],
        [
            [s["schema"], "yes" if s["valid"] else f"NO: {s['error']}", s["tokens"],
             ms(s["seconds"]), s["finish_reason"]]
            for s in r["structured"]
        ],
    )  # fmt: skip
    return (
        f"Data: `{Path(r['data']).name}`, {n} items timed one call each, labels "
        f"{', '.join(r['labels'])}. Each item is classified (`/v1/classify`) and, right after, "
        "its label is generated by a chat completion with the same instruction as system "
        f"prompt; both paths have the instruction cached. An item's tokens are those prefilled "
        f"after the cached prefix (input + end of turn + assistant header; mean "
        f"{fmt(r['mean_item_tokens'])}); the raw prefill is llama_decode of that many tokens "
        "in one sequence, timed in the bench process on the same model right next to the two "
        "calls (rotating order, server idle). Latency is the client's HTTP round trip."
        f"\n\n{latency}\n\n"
        f"Per item, median: latency ÷ raw prefill {fmt(r['single_over_ceiling_p50'])}; "
        f"generated ÷ scored {fmt(r['speedup_p50'])} (ratio of the p50s: "
        f"{fmt(r['speedup_of_p50s'])}); with nothing but compute, i.e. (raw prefill + one "
        f"decode step) ÷ raw prefill, it would be {fmt(r.get('speedup_bound_p50'))}.\n\n"
        f"Batched: {b['items']} short inputs in one call, each run right after a raw prefill "
        f"of a {CHUNK}-token chunk; ceiling items/s = that chunk's tok/s ÷ mean item tokens; "
        f"median ratio {fmt(r['batch_over_ceiling'])}.\n\n{batch}\n\n"
        f"Confusion, scored:\n\n{confusion(r['scored'])}\n\n"
        f"Confusion, generated:\n\n{confusion(r['generated'])}\n\n"
        f"Structured output (`response_format` json_schema, greedy):\n\n{schemas}"
    )


SCENARIO = Classify()
