"""User options: the spawn form, and the server-side check of what it (or the REST API) sends.

``user_options`` has two keys, ``image_tag`` and ``size``; the form posts the same names. Nothing the
browser sends is trusted: ``validate_options`` checks both against the catalog and the configured
sizes (and the tag policy, when one restricts the user) and names the allowed values when it
refuses. The form is rendered from a Jinja template with autoescaping.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import jinja2

from spawner.core.catalog import Catalog, TagEntry
from spawner.core.config import Size, memory_bytes
from spawner.core.tags import RECOMMENDED, TagClass

OTHER = "__other__"
_env = jinja2.Environment(
    loader=jinja2.PackageLoader("spawner", "templates"),
    autoescape=jinja2.select_autoescape(default=True, default_for_string=True),
)


class OptionsError(ValueError):
    """user_options that cannot be honoured; the message names what is allowed."""


@dataclass(frozen=True)
class Restriction:
    """What the tag policy lets one user pick: ``only`` (a session lock) or ``hidden`` tags.

    ``recommended`` overrides which catalog tag the ``recommended`` alias stands for (the admins'
    run-time choice); a tag that is not in the catalog leaves the configured one in place.
    """

    only: str | None = None
    reason: str = ""
    hidden: frozenset = field(default_factory=frozenset)
    recommended: str | None = None

    def catalog(self, catalog: Catalog) -> Catalog:
        """The catalog as this user sees it (with the recommended override applied)."""
        return catalog.with_recommended(self.recommended)


@dataclass(frozen=True)
class Choice:
    entry: TagEntry
    size: Size


def options_from_form(formdata: dict[str, list[str]]) -> dict:
    """Turn posted form fields into user_options; the "other" radio takes the dropdown's value."""
    def first(key):
        values = formdata.get(key) or [""]
        return values[0].strip()

    tag = first("image_tag")
    if tag == OTHER:
        tag = first("image_tag_other")
    options = {}
    if tag:
        options["image_tag"] = tag
    if size := first("size"):
        options["size"] = size
    return options


def allowed_tags(catalog: Catalog, restriction: Restriction) -> list[str]:
    """Tag names this user may choose, in menu order, ``recommended`` first."""
    catalog = restriction.catalog(catalog)
    if restriction.only:
        return [restriction.only]
    names = [n for n in catalog.names() if n not in restriction.hidden]
    if catalog.recommended in names:
        names.insert(0, RECOMMENDED)
    return names


def validate_options(
    options, catalog: Catalog, sizes: list[Size], *, default_size: str,
    restriction: Restriction = Restriction(),
) -> Choice:
    """Check user_options and resolve them to an image and a size; raise OptionsError if not valid."""
    if options is None:
        options = {}
    if not isinstance(options, dict):
        raise OptionsError("user_options must be a JSON object with keys image_tag and size")
    unknown = sorted(set(options) - {"image_tag", "size"})
    if unknown:
        raise OptionsError(f"unknown user_options {', '.join(unknown)}; allowed keys: image_tag, size")
    tag = options.get("image_tag", RECOMMENDED)
    size_name = options.get("size", default_size)
    catalog = restriction.catalog(catalog)
    allowed = allowed_tags(catalog, restriction)
    if not isinstance(tag, str):
        raise OptionsError(f"image_tag must be a string; allowed: {', '.join(allowed)}")
    if not isinstance(size_name, str):
        raise OptionsError(f"size must be a string; allowed: {', '.join(s.name for s in sizes)}")
    if restriction.only:
        if tag not in (restriction.only, RECOMMENDED):
            raise OptionsError(f"{restriction.reason}: only image_tag {restriction.only!r} may be started, not {tag!r}")
        tag = restriction.only
    elif tag not in allowed:
        shown = ", ".join(allowed) or "(no stack images are built; run `make images`)"
        what = f"image_tag {tag!r} is not offered (hidden by an admin)" if tag in restriction.hidden \
            else f"unknown image_tag {tag!r}"
        raise OptionsError(f"{what}; allowed: {shown}")
    entry = catalog.get(tag)
    if entry is None:
        raise OptionsError(f"no stack image for image_tag {tag!r}; allowed: {', '.join(allowed)}")

    by_name = {s.name: s for s in sizes}
    if size_name not in by_name:
        raise OptionsError(f"unknown size {size_name!r}; allowed: {', '.join(by_name)}")
    return Choice(entry, by_name[size_name])


def check_user_total(size: Size, running: list[Size], *, total_cpu: float | None,
                     total_memory: str | None) -> None:
    """Refuse a server whose size, with the sizes of the user's other running servers, passes
    hub.namedServers.totalCpu / totalMemory; the message names the limit and what runs."""
    cpu = size.cpu + sum(s.cpu for s in running)
    memory = memory_bytes(size.memory) + sum(memory_bytes(s.memory) for s in running)
    over = []
    if total_cpu is not None and cpu > total_cpu + 1e-9:
        over.append(f"{cpu:g} cores (hub.namedServers.totalCpu is {total_cpu:g})")
    if total_memory is not None and memory > memory_bytes(total_memory):
        over.append(f"{size.memory if not running else _human(memory)} of memory "
                    f"(hub.namedServers.totalMemory is {total_memory})")
    if over:
        others = ", ".join(s.name for s in running) or "none"
        raise OptionsError(f"size {size.name!r} would give your servers {' and '.join(over)}; your other "
                           f"running servers' sizes: {others}. Stop one, or pick a smaller size.")


def _human(nbytes: int) -> str:
    for unit, factor in (("T", 2**40), ("G", 2**30), ("M", 2**20), ("K", 2**10)):
        if nbytes >= factor:
            return f"{nbytes / factor:g}{unit}"
    return str(nbytes)


@dataclass(frozen=True)
class Menu:
    """The form's groups, ready for the template."""

    recommended: TagEntry | None
    groups: list[tuple[str, list[TagEntry]]]
    others: list[TagEntry]
    locked: str | None = None
    reason: str = ""


def build_menu(catalog: Catalog, restriction: Restriction = Restriction(), *,
               releases: int = 2, weeklies: int = 3, dailies: int = 3) -> Menu:
    """Group the catalog as the Rubin Science Platform does: recommended, newest releases,
    weeklies, dailies; every other tag goes in one dropdown."""
    catalog = restriction.catalog(catalog)
    if restriction.only:
        entry = catalog.get(restriction.only)
        return Menu(entry, [], [], locked=restriction.only, reason=restriction.reason)
    visible = [e for e in catalog.entries if e.name not in restriction.hidden]
    rec = catalog.get(RECOMMENDED)
    if rec is not None and rec.name in restriction.hidden:
        rec = None
    featured: list[tuple[str, list[TagEntry]]] = []
    shown = set()
    for title, cls, count in (("Releases", TagClass.RELEASE, releases),
                              ("Weeklies", TagClass.WEEKLY, weeklies),
                              ("Dailies", TagClass.DAILY, dailies)):
        picked = [e for e in visible if e.tag.tag_class == cls and e.present][:count]
        if picked:
            featured.append((title, picked))
            shown.update(e.name for e in picked)
    others = [e for e in visible if e.name not in shown]
    return Menu(rec, featured, others)


def render_form(menu: Menu, sizes: list[Size], default_size: str) -> str:
    return _env.get_template("options_form.html").render(
        menu=menu, sizes=sizes, default_size=default_size, other=OTHER, recommended=RECOMMENDED,
    )
