/* MathJax is not loaded: the site fetches nothing from a CDN (mkdocs.yml) */
