from dimalign.cli import main

raise SystemExit(main())
