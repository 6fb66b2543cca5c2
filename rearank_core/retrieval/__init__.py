"""Lucene BM25 through pyserini: the JVM start-up (``jvm``) and index building and search (``bm25``)."""
