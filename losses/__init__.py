"""Loss terms: each a frozen dataclass in a file of its own, reading the one declared
render-output contract (`base.LossInputs`); `regularizers.Regularizers` is the set a run
turns on. See ``docs/design.md`` (Loss terms)."""
