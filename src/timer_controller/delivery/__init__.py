"""One webhook attempt: target policy, request building, signing, transport, dispatch."""
