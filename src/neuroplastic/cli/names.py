"""Choices the CLI names in its help, kept here without importing torch (a test checks
that they equal the library's own lists)."""

SCENARIOS = ("class", "random", "indices", "subclass", "corrective")
DEMO_SKILLS = ("addition", "reversal", "sorting", "copying")
LEARN_RULES = ("disinhibitory", "softhebb", "biprop", "halfbiprop", "han", "backprop")
ADAPT_METHODS = ("tent", "norm", "nhl", "source")
SHIFT_METHODS = ("homeostatic", "constant", "random-lr")
ARCHITECTURES = ("mlp", "cnn", "resnet18")
