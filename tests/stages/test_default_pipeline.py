def test_default_pipeline_in_process(run_stage, client):
    ctx = run_stage()
    names = sorted(e.name for e in client.search_experiments() if e.name != "Default")
    assert names == [
        "MLPClassifier - Evaluation",
        "MLPClassifier - Saliency Map Generation",
        "MLPClassifier - Train",
    ]
    assert len(ctx.results["saliency_run_ids"]) == 1
