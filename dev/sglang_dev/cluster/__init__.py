"""The local cluster: `sglang-operator dev up|down|status|logs`.

One supervisor process runs the Deployment controller, the local kubelet and the Service proxy as asyncio
tasks, and the API emulator and the operator as child processes. Everything listens on loopback. Nothing in
the operator imports this package: the operator runs unchanged against the emulator.
"""
