"""Fields: encodings, tiny MLPs and the radiance field that composes them."""
