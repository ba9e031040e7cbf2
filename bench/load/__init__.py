"""Load-test harness: thousands of parallel jobs, one command, a report with plots.

    python -m bench.load [--jobs 2000] [--seconds 120] [--url ... --amqp-url ...]

Processes (all on this machine, loopback only):

    service      `sca-progress serve` with a private redis-server, consuming a
                 queue of its own on the machine's RabbitMQ (or --url / --amqp-url:
                 a service already running)
    jobs         jobs.py: J simulated jobs publishing their plans over AMQP, with a
                 share over REST (single and batch POST); it records what it sent
    subscribers  S socket.io clients following job trees (write-to-client latency)
    harness      this process: R readers GETting trees at depths 1-5, a monitor
                 sampling backlog, Redis and every process's CPU, then the
                 correctness check and the report (JSON, Markdown, PNG plots)
"""
