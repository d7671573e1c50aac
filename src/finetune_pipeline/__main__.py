import sys

from finetune_pipeline.cli.predict_evaluate import main

sys.exit(main())
