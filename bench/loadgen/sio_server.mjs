// Node socket.io: rooms and emit, the library's own way.
import { Server } from "socket.io";

const io = new Server(Number(process.argv[2]), { perMessageDeflate: false, cors: { origin: "*" } });
io.on("connection", (socket) => {
  socket.on("join", (room, ack) => { socket.join(room); if (ack) ack("joined"); });
  socket.on("pub", (frame) => { io.to(frame.room).emit("msg", frame.data); });
});
