"""The web console: the FAQ's pages for cabinet users (``/console``) and the operators'
pages (``/console/ops``), server-rendered with Jinja2 and served by the API process."""
