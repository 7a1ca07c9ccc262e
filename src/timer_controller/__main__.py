from timer_controller.cli import main

raise SystemExit(main())
