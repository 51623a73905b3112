"""Fail if a built site loads anything from another host.

Usage: python .ci/check_offline_site.py SITE_DIR

The docs must read offline (maths included), so no page may fetch a script, stylesheet, font,
image or frame from an absolute URL (`http://`, `https://` or protocol-relative `//`). Ordinary
hyperlinks (`<a href>`) are not fetched and are allowed, as are `<link>`s that only name a page
(`rel="canonical"`, `"alternate"`, ...). Stylesheets are checked for `url(...)` and `@import`.
"""

import html.parser
import pathlib
import re
import sys

EXTERNAL = re.compile(r"^\s*(?:https?:)?//", flags=re.I)
# Attributes whose URL the browser fetches on its own, by tag.
FETCHED = {
    "script": ("src",),
    "link": ("href",),
    "img": ("src", "srcset"),
    "source": ("src", "srcset"),
    "iframe": ("src",),
    "embed": ("src",),
    "object": ("data",),
    "audio": ("src",),
    "video": ("src", "poster"),
    "track": ("src",),
    "input": ("src",),
}
# <link rel=...> values that name a related page rather than load a resource.
NOT_FETCHED_RELS = {"canonical", "alternate", "author", "license", "help", "next", "prev", "search"}
CSS_URL = re.compile(r"""(?:url\(\s*['"]?|@import\s+['"])\s*((?:https?:)?//[^'")\s]+)""", re.I)


class _Finder(html.parser.HTMLParser):
    def __init__(self):
        super().__init__()
        self.found = []

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "link":
            rels = set((attrs.get("rel") or "").lower().split())
            if rels and rels <= NOT_FETCHED_RELS:
                return
        for name in FETCHED.get(tag, ()):
            for url in re.split(r",\s*", attrs.get(name) or ""):
                if EXTERNAL.match(url):
                    self.found.append((self.getpos()[0], f"<{tag} {name}={url.split()[0]!r}>"))

    handle_startendtag = handle_starttag


def external_references(site):
    site = pathlib.Path(site)
    for page in sorted(site.rglob("*.html")):
        finder = _Finder()
        finder.feed(page.read_text(encoding="utf-8"))
        for line, what in finder.found:
            yield f"{page.relative_to(site)}:{line}: {what}"
    for sheet in sorted(site.rglob("*.css")):
        text = sheet.read_text(encoding="utf-8")
        for match in CSS_URL.finditer(text):
            line = text.count("\n", 0, match.start()) + 1
            yield f"{sheet.relative_to(site)}:{line}: {match.group(1)}"


def main(argv):
    if len(argv) != 2 or not pathlib.Path(argv[1]).is_dir():
        sys.exit(f"usage: {argv[0]} SITE_DIR (a built mkdocs site)")
    if not any(pathlib.Path(argv[1]).rglob("*.html")):
        sys.exit(f"{argv[1]} holds no HTML page: build the site first")
    found = list(external_references(argv[1]))
    for line in found:
        print(line)
    if found:
        sys.exit(f"{len(found)} external reference(s): the site would not read offline")
    print(f"{argv[1]}: no page loads anything from another host")


if __name__ == "__main__":
    main(sys.argv)
