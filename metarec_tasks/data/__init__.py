"""Episode data: the feature vocabulary, user splits and task episodes, and the one loader of them."""
