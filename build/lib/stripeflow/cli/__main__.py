from stripeflow.cli import main

main()
