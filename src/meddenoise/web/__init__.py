"""The local viewer (`meddenoise view`) and the HTTP API (`meddenoise serve`).

- `app`: the Starlette application, its limits and the token gate;
- `pool`: the worker processes that denoise, with a cap on work in flight and a time limit;
- `worker`: what runs inside each worker process;
- `viewer` and `display`: the viewer's cases, routes and what it shows (windows, presets);
- `server`: uvicorn on a socket bound before the address is printed;
- `cli`: the two commands.

Starlette and uvicorn are imported only when a server starts (the ``web`` extra).
"""
