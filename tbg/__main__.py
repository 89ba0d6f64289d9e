from tbg.cli import main

raise SystemExit(main())
