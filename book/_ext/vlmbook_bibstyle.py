"""Author–year labels for the bibliography, so that it lists "Alayrac et al., 2022" exactly as
the text cites it (sphinxcontrib-bibtex's ``bibtex_reference_style = "author_year"``), instead of
pybtex's alpha labels such as ``[ADL+22]``.
"""
from __future__ import annotations

from pybtex.plugin import register_plugin
from pybtex.richtext import Text
from pybtex.style.formatting.unsrt import Style as UnsrtStyle
from pybtex.style.labels import BaseLabelStyle
from pybtex.style.sorting.author_year_title import SortingStyle


def _surname(person) -> str:
    # BibTeX accents such as Ball{\'e} become plain Unicode (Ballé), as in the in-text citations.
    return Text.from_latex(" ".join(person.prelast_names + person.last_names)).render_as("text")


def author_year_label(entry) -> str:
    """'Shannon, 1948', 'Cover and Thomas, 2006', 'Alayrac et al., 2022'."""
    persons = entry.persons.get("author") or entry.persons.get("editor") or []
    names = [_surname(p) for p in persons]
    if not names:
        who = entry.fields.get("key", entry.key)
    elif len(names) == 1:
        who = names[0]
    elif len(names) == 2:
        who = f"{names[0]} and {names[1]}"
    else:
        who = f"{names[0]} et al."
    return f"{who}, {entry.fields.get('year', 'n.d.')}"


class AuthorYearLabelStyle(BaseLabelStyle):
    def format_labels(self, sorted_entries):
        seen: dict[str, int] = {}
        for entry in sorted_entries:
            label = author_year_label(entry)
            seen[label] = seen.get(label, 0) + 1
            # Same authors and year twice: 2022a, 2022b, ... keeps labels unique.
            yield label if seen[label] == 1 else label + chr(ord("a") + seen[label] - 1)


class AuthorYearStyle(UnsrtStyle):
    default_label_style = "vlmbook_author_year"
    default_sorting_style = "author_year_title"


def setup(app):
    register_plugin("pybtex.style.labels", "vlmbook_author_year", AuthorYearLabelStyle)
    register_plugin("pybtex.style.formatting", "vlmbook_author_year", AuthorYearStyle)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
