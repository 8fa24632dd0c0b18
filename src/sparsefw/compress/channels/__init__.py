"""Channel removal surgery behind `remove_filters`, one module each: coupled (`slicing`, over the
groups of `sparsefw.graph`) and per-layer (`per_layer`, `per_layer_rules`, `layout`, `per_layer_inplace`)."""
