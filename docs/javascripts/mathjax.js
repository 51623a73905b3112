// MathJax for pymdownx.arithmatex (generic mode), re-typeset on every instant page load.
//
// MathJax is served by the site itself (no CDN, so the docs read offline): mathjax/tex-svg-full.js
// is es5/tex-svg-full.js from the npm package mathjax@3.2.2 (`npm pack mathjax@3.2.2`; Apache-2.0,
// licence in mathjax/LICENSE). SVG output carries its glyphs inline, so no font files are needed,
// and the "full" build has every TeX extension compiled in, so nothing is autoloaded at run time.
window.MathJax = {
  tex: {
    inlineMath: [["\\(", "\\)"]],
    displayMath: [["\\[", "\\]"]],
    processEscapes: true,
    processEnvironments: true,
  },
  svg: {
    fontCache: "global",
  },
  options: {
    ignoreHtmlClass: ".*|",
    processHtmlClass: "arithmatex",
  },
};

document$.subscribe(() => {
  MathJax.startup.output.clearCache();
  MathJax.typesetClear();
  MathJax.texReset();
  MathJax.typesetPromise();
});
