"""tuspyserver (FastAPI's tus server) as the peer of Keel's tus endpoint.

Run: uvicorn tus_app:app --host 127.0.0.1 --port PORT  (TUS_FILES_DIR sets where bytes go)
"""
import os

from fastapi import FastAPI
from tuspyserver import create_tus_router

app = FastAPI()
app.include_router(create_tus_router(prefix="files", files_dir=os.environ.get("TUS_FILES_DIR", "/tmp/tus-files")))
