// Serves a jco-transpiled wasi:http component on 127.0.0.1 at a free port,
// printed as the first line on stdout.
import { HTTPServer } from '@bytecodealliance/preview2-shim/http';
import { pathToFileURL } from 'node:url';

const mod = await import(pathToFileURL(process.argv[2]).href);
const server = new HTTPServer(mod.incomingHandler);
server.listen(0, '127.0.0.1');
console.log(server.address().port);
