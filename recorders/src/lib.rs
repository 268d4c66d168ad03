/*!
Recorders that turn captured traffic into `replay` corpora: pcap and pcapng captures (TCP
reassembled into HTTP/1.1 exchanges, other packets kept as packet cases), a recording HTTP proxy,
and HAR files. Nothing here yet: the pcap recorder is the next issue.
*/
