"""Every picture the pipeline writes: saliency maps, confusion matrix and grids (:mod:`.figures`); deletion and
insertion curves and the algorithm comparison (:mod:`.curves`). Pillow only, imported where a picture is drawn."""
