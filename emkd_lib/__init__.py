"""emkd_lib: the training core of the emkd-book study of online distillation
for sequential recommendation (EMKD, S^4Rec, ODMT)."""

__version__ = "0.1.0"
