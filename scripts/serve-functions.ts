/** `npm start`'s foreground process: the functions gateway on $API_PORT until Ctrl-C. */
import { startGateway } from "./functions-gateway.ts";

const port = Number(Deno.env.get("API_PORT") ?? "54321");
const gateway = await startGateway({ port, log: true });
console.error(`functions served at ${gateway.url}/functions/v1/{${gateway.functions.join(",")}}  (Ctrl-C to stop)`);
for (const signal of ["SIGINT", "SIGTERM"] as const) {
  Deno.addSignalListener(signal, async () => {
    await gateway.shutdown();
    Deno.exit(0);
  });
}
