from dimalign.cli import main

if __name__ == "__main__":  # `python -m dimalign`; importing this module runs nothing
    raise SystemExit(main())
