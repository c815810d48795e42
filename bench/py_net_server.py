#!/usr/bin/env python3
"""The net suite's workloads served by Twisted's reactor (epoll on Linux).

  pingpong, stream  a Protocol whose dataReceived writes the data back; it is
                    half-closeable, so when the client closes its side the
                    rest is sent and then the connection closed
  accept            connectionMade writes the 8-byte greeting; the client's
                    reset ends the connection
  write_batch       connectionMade calls transport.write once per 8-byte
                    message (message i: i as a little-endian uint64, built
                    before listening), then loseConnection
Every connection gets TCP_NODELAY (as twine's transports have by default).
The constants match bench/net_common.h. The port is printed on one line once
listening; SIGTERM stops the reactor (Twisted's own handler) and exits 0.

usage: py_net_server.py pingpong|stream|accept|write_batch PORT [COUNT]
"""

import struct
import sys

GREETING = b"greeting"  # NET_GREETING
BATCH_COUNT = 1_000_000  # NET_BATCH_COUNT
BACKLOG = 1024  # NET_BACKLOG


def main(argv):
    if len(argv) not in (3, 4) or argv[1] not in ("pingpong", "stream", "accept", "write_batch"):
        print(f"usage: {argv[0]} pingpong|stream|accept|write_batch PORT [COUNT]", file=sys.stderr)
        return 2
    workload, port = argv[1], int(argv[2])
    count = int(argv[3]) if len(argv) == 4 else BATCH_COUNT

    from twisted.internet import interfaces, protocol, reactor
    from zope.interface import implementer

    @implementer(interfaces.IHalfCloseableProtocol)
    class Echo(protocol.Protocol):
        def connectionMade(self):
            self.transport.setTcpNoDelay(True)

        def dataReceived(self, data):
            self.transport.write(data)

        def readConnectionLost(self):
            self.transport.loseConnection()

        def writeConnectionLost(self):
            pass

    class Greet(protocol.Protocol):
        def connectionMade(self):
            self.transport.setTcpNoDelay(True)
            self.transport.write(GREETING)

    messages = []
    if workload == "write_batch":
        pack = struct.Struct("<Q").pack
        messages = [pack(i) for i in range(count)]

    class Batch(protocol.Protocol):
        def connectionMade(self):
            self.transport.setTcpNoDelay(True)
            write = self.transport.write
            for m in messages:
                write(m)
            self.transport.loseConnection()

    factory = protocol.Factory()
    factory.protocol = {"accept": Greet, "write_batch": Batch}.get(workload, Echo)
    listening = reactor.listenTCP(port, factory, backlog=BACKLOG, interface="127.0.0.1")
    print(listening.getHost().port, flush=True)
    reactor.run()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
