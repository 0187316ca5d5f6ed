"""Sphinx extension: a bibliography labelled by author and year.

The text cites author-year (``bibtex_reference_style: author_year`` gives
"[Du et al., 2023]"), but pybtex's ``plain`` style labels the bibliography
entries "[1]", "[2]", ..., so a reader following a citation lands on a number
that appears nowhere in the text. This style labels each entry the way it is
cited and sorts the list by author and year.

Registered as the pybtex formatting style ``emkd_author_year``; loaded
through ``sphinx.local_extensions`` in ``_config.yml``.
"""
from __future__ import annotations

import re
from collections import Counter

from pybtex.plugin import register_plugin
from pybtex.style.formatting.unsrt import Style as UnsrtStyle
from pybtex.style.labels import BaseLabelStyle


def _last_name(person) -> str:
    # BibTeX braces ({BERT4Rec}, {\"u}) are markup, not part of the name.
    return re.sub(r"[{}]", "", " ".join(person.prelast_names + person.last_names))


def author_year(entry) -> str:
    """"Kang and McAuley, 2018", "Du et al., 2023": how the text cites ``entry``."""
    persons = entry.persons.get("author") or entry.persons.get("editor") or []
    names = [_last_name(p) for p in persons]
    if not names:
        who = entry.key
    elif len(names) == 1:
        who = names[0]
    elif len(names) == 2:
        who = f"{names[0]} and {names[1]}"
    else:
        who = f"{names[0]} et al."
    return f"{who}, {entry.fields.get('year', 'n.d.')}"


class AuthorYearLabelStyle(BaseLabelStyle):
    def format_labels(self, sorted_entries):
        sorted_entries = list(sorted_entries)
        labels = [author_year(e) for e in sorted_entries]
        # Two works with the same label become 2023a, 2023b, as in the text.
        counts, seen = Counter(labels), Counter()
        for label in labels:
            if counts[label] > 1:
                seen[label] += 1
                label = f"{label}{chr(ord('a') + seen[label] - 1)}"
            yield label


class AuthorYearStyle(UnsrtStyle):
    default_label_style = "emkd_author_year"
    default_sorting_style = "author_year_title"


def setup(app):
    register_plugin("pybtex.style.labels", "emkd_author_year", AuthorYearLabelStyle)
    register_plugin("pybtex.style.formatting", "emkd_author_year", AuthorYearStyle)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
