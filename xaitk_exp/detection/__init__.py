"""Object detection: black boxes over detectors, chunked D-RISE, COCO annotations and evaluation, and the quality
metrics of a detection's saliency map. Leaf parts the detection task builds on."""
