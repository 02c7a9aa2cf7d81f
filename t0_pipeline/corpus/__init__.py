"""The corpus: a site crawled (or a local mirror, a pre-scraped pages file, a folder of PDF, Word,
HTML, Markdown and text documents) → raw pages → the cleaned documents every later stage reads.
"""
