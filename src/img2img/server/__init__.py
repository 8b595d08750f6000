"""HTTP server: an AUTOMATIC1111-compatible API and a native API in front of one job queue.

Nothing heavy is imported here (the CLI's --help must stay fast): see app.create_app for the server and
jobs.JobQueue for the queue that the web UI shares.
"""
