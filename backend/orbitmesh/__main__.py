from orbitmesh.cli import main

raise SystemExit(main())
