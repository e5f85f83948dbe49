"""dimalign's benchmarks, one tool: `python -m bench NAME [args...]` from the repository root
(`make bench NAME=... ARGS="..."`); `python -m bench` lists them. Each is a module here with
`main(argv) -> int`; bench/common.py holds what they share."""
