"""Episode data: the feature vocabulary, user splits and task episodes, item text embeddings, and the
one loader of them."""
