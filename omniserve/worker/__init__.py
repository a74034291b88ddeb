"""The worker tier: one engine behind HTTP/WebSocket, one session at a time (docs/worker.md).

``omniserve worker`` runs ``main.run``; ``app.create_app`` builds the FastAPI app. Only this
package imports the engine; the gateway talks to a worker over the wire protocol alone.
"""
