// scratch, not committed
#[tokio::main]
async fn main() {
    let dir = std::env::args().nth(1).unwrap();
    let port: u16 = std::env::args().nth(2).unwrap().parse().unwrap();
    let mut c = sarasa_apiserver::Config::new(dir);
    c.listen = vec![std::net::SocketAddr::from(([127, 0, 0, 1], port))];
    let s = sarasa_apiserver::ApiServer::open(c).unwrap();
    s.run().await.unwrap();
}
