#!/usr/bin/env python3
"""The Twisted server of the net suite.

    py_net_server.py echo           dataReceived writes the data back; the
                                    transport is the producer of its own echo
                                    (reading pauses while its buffer is full)
    py_net_server.py batch COUNT    COUNT 8-byte messages to the first connection,
                                    one transport.write each, as fast as its push
                                    producer is allowed, then exits

Listens on 127.0.0.1, port chosen by the system, prints "listening on PORT";
SIGTERM stops it.
"""

import sys

from twisted.internet import protocol, reactor
from zope.interface import implementer
from twisted.internet.interfaces import IPushProducer


class Echo(protocol.Protocol):
    def connectionMade(self):
        self.transport.setTcpNoDelay(True)
        self.transport.registerProducer(self.transport, True)

    def dataReceived(self, data):
        self.transport.write(data)


@implementer(IPushProducer)
class Batch(protocol.Protocol):
    count = 0
    started = False

    def connectionMade(self):
        if Batch.started:
            self.transport.abortConnection()
            return
        Batch.started = True
        self.transport.setTcpNoDelay(True)
        self.sent = 0
        self.paused = False
        self.transport.registerProducer(self, True)
        self.produce()

    def produce(self):
        write = self.transport.write
        msg = b"0123456\n"
        while not self.paused and self.sent < Batch.count:
            write(msg)
            self.sent += 1
        if self.sent == Batch.count and not self.paused:
            self.transport.unregisterProducer()
            self.transport.loseConnection()

    def pauseProducing(self):
        self.paused = True

    def resumeProducing(self):
        self.paused = False
        self.produce()

    def stopProducing(self):
        self.paused = True

    def connectionLost(self, reason):
        if Batch.started and getattr(self, "sent", 0) == Batch.count:
            reactor.stop()


def main():
    mode = sys.argv[1] if len(sys.argv) > 1 else ""
    factory = protocol.Factory()
    if mode == "echo":
        factory.protocol = Echo
    elif mode == "batch" and len(sys.argv) > 2:
        Batch.count = int(sys.argv[2])
        factory.protocol = Batch
    else:
        sys.exit("usage: py_net_server.py echo | batch COUNT")
    port = reactor.listenTCP(0, factory, backlog=1024, interface="127.0.0.1")
    print("listening on %d" % port.getHost().port, flush=True)
    reactor.run()


if __name__ == "__main__":
    main()
