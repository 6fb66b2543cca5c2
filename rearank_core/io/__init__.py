"""Files in and out: atomic writes and line readers (``files``), and a reader/writer per format: TREC topics,
qrels and runs (``trec``), BEIR folders (``beir``), BRIGHT (``bright``), corpora (``collection``), rank_llm
candidates and RankGPT retrieve-results (``requests``), format sniffing (``auto``), window traces (``traces``), and
the training-data records (``training_data``)."""
