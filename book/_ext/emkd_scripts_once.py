"""Each page's scripts once: Jupyter Book 1 runs sphinx-thebe's set-up twice,
which puts its inline ``const THEBE_JS_URL = ...`` script on every page twice,
and the browser then logs "Identifier 'THEBE_JS_URL' has already been
declared" on each page. Identical scripts (same file, same inline body, same
attributes) are kept at their first place."""
from __future__ import annotations


def _key(script) -> tuple:
    # Sphinx's _JavaScript has a ``filename`` (None or "" when inline: the
    # two set-ups differ there) and ``attributes`` (an inline body under "body").
    attributes = getattr(script, "attributes", {}) or {}
    return str(getattr(script, "filename", script) or ""), tuple(sorted((k, str(v)) for k, v in attributes.items()))


def scripts_once(app, pagename, templatename, context, doctree):
    scripts = context.get("script_files")
    if not scripts:
        return
    seen, kept = set(), []
    for script in scripts:
        key = _key(script)
        if key not in seen:
            seen.add(key)
            kept.append(script)
    context["script_files"] = kept


def setup(app):
    # After the themes have added theirs (the default priority is 500).
    app.connect("html-page-context", scripts_once, priority=900)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
