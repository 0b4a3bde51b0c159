"""The staff console: clindav's web pages at ``/app/`` (docs/CONSOLE.md).

Server-rendered pages (Flask, Jinja2, Flask-WTF) for the decisions people
make about images: held images waiting for consent, a patient's images and
consent.  Every page calls the services WebDAV and the command line use
(policy, consent, trash, audit); none keeps a rule of its own.

This module imports nothing: :mod:`gateway.console.headers` is read by the
path guard of every request, and Flask is loaded only where the app is built.
"""
